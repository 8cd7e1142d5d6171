"""From a run config to the things a search needs: base model, data split, space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from evaluators import default_task
from spaces import BlockDropSpace, ComposedSpace, FilterMaskSpace

from .config import RunConfig


@dataclass(frozen=True)
class SearchTask:
    """The base model and the only data compression may touch (few-shot) or score on (validation)."""

    model: nn.Module
    example_input: torch.Tensor
    calibration_x: np.ndarray
    validation_x: np.ndarray
    validation_y: np.ndarray
    split: dict
    reference_accuracy: float


def load_task(cfg: RunConfig, on_train_epoch: Callable[[int, int], None] | None = None) -> SearchTask:
    """The embedded default (the only model and data the spine knows), trained on first use."""
    task = default_task(progress=on_train_epoch)
    few = task.data.subset(task.split.few_shot)
    val = task.data.subset(task.split.validation)
    split = {"data": task.data.name, **task.split.describe()}
    return SearchTask(task.model, task.example_input, few.x, val.x, val.y, split, task.validation_accuracy)


def make_space(task: SearchTask, cfg: RunConfig) -> ComposedSpace:
    parts = []
    if cfg.drops:
        parts.append(BlockDropSpace(task.model, task.example_input))
    if cfg.masks:
        parts.append(FilterMaskSpace(task.model, task.example_input))
    return ComposedSpace(parts)
