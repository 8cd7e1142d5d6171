"""The binary-width search's space: a Bi-Real supernet distilled from the run's model, trained once.

The supernet is a new network, not a compression of the model, so it is trained on the model's own
training split (the embedded default's 1,257 images); candidates are then scored like any other:
BatchNorm re-estimated on the few-shot images, top-1 on the validation split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from hilas.evaluators import SupernetTraining, WidthChoices, cached_supernet, default_task
from hilas.search.errors import UserError
from hilas.spaces import BinaryWidthSpace, BiRealNet
from hilas.spaces.binary import BASE_WIDTH, STAGES, WIDTH_MULTIPLIERS

if TYPE_CHECKING:  # task.py imports this module
    from hilas.search.config import RunConfig
    from hilas.search.setup.task import SearchTask

# 12 epochs of the sandwich rule (4 widths a step) on one thread: about a minute on 2 x86 cores (56 s measured).
TRAINING = SupernetTraining(epochs=12)
TRAINING_STEP = "training the binary supernet (epochs)"


def binary_space(task: SearchTask, cfg: RunConfig,
                 on_progress: Callable[[str, int, int], None] | None = None) -> BinaryWidthSpace:
    """Stage widths of a Bi-Real network whose supernet learnt from `task.model` (cached after the first run)."""
    if (cfg.model, cfg.data) != ("digits-resnet", "digits"):
        raise UserError(f"[space] binary trains its supernet on the embedded default's training split; it cannot "
                        f"run on model '{cfg.model}' with data '{cfg.data}' yet")
    default = default_task()
    train = default.data.subset(default.split.train)
    widest = BASE_WIDTH * max(WIDTH_MULTIPLIERS)
    with torch.random.fork_rng():  # the same initial weights in every process, so the cache key holds
        torch.manual_seed(TRAINING.seed)
        supernet = BiRealNet((widest,) * STAGES, in_channels=int(task.example_input.shape[1]),
                             n_classes=default.data.n_classes)
    choices = WidthChoices(tuple(BASE_WIDTH * m for m in WIDTH_MULTIPLIERS), STAGES)
    progress = (lambda epoch, epochs: on_progress(TRAINING_STEP, epoch, epochs)) if on_progress else None
    trained, _ = cached_supernet(supernet, choices, task.model, train.x, train.y, TRAINING, name="binary-bireal",
                                 progress=progress)
    return BinaryWidthSpace(trained, task.example_input)
