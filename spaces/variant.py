"""What a genome decodes to: a structure identity plus a way to build the compressed model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ModelStats:
    """Size of a built model. `flops` counts a multiply-add as 2 operations (flops = 2 * MACs)."""

    params: int
    flops: int


@dataclass(frozen=True)
class Variant:
    """A compressed variant of the base model: what a genome decodes to (a *candidate* once a run evaluates it,
    with an id in the run).

    `structure_key` names the structure only (kept channels per group, dropped blocks): latency
    depends on it alone, so measurements are shared by every genome with the same structure key.
    `model_key` names the exact model (which filters are kept): accuracy depends on it.
    """

    genome: np.ndarray
    structure_key: str
    model_key: str
    widths: dict[str, int]
    dropped: tuple[str, ...]
    _build: Callable[[], nn.Module] = field(repr=False, compare=False)

    def build(self) -> nn.Module:
        """A new, physically smaller copy of the base model with the kept weights, in eval mode."""
        return self._build()


def model_stats(model: nn.Module, example_input: torch.Tensor) -> ModelStats:
    """Parameter and FLOP count of `model` for one forward pass on `example_input`.

    A model that counts its own operations answers through its `model_stats` method (a binary
    network: its 1-bit multiply-adds are not floating-point ones).
    """
    own = getattr(model, "model_stats", None)
    if callable(own):
        return own(example_input)
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, example_inputs=example_input)
    return ModelStats(params=int(params), flops=int(2 * macs))
