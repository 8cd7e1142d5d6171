"""The callbacks a run reports its progress through; the CLI turns them into progress bars."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Progress:
    """Callbacks the CLI turns into progress bars; all optional."""

    on_train_epoch: Callable[[int, int], None] | None = None
    on_evaluation: Callable[[str, int, int], None] | None = None
