"""From a run config to the things a search needs: base model, data split, space."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from hilas.evaluators import DigitsResNet, call_factory, default_task, load_exported_model, top1
from hilas.search.config import MODELS, RunConfig
from hilas.search.errors import UserError
from hilas.search.setup.binary import binary_space
from hilas.search.setup.drops import load_adapters
from hilas.search.setup.inputs import check_inputs, describe_split, load_model, load_split_data
from hilas.spaces import BlockDropSpace, ComposedSpace, DropAdapters, FilterMaskSpace, check_space
from hilas.spaces.binary import BinaryWidthSpace


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
    """The config's model and data, checked (see `inputs`); the embedded default is trained on first use."""
    if cfg.user_model or cfg.data != "digits":
        model, example = load_model(cfg, on_train_epoch)
        data, split = load_split_data(cfg, example)
        check_inputs(model, example, data)
        few, val = data.subset(split.few_shot), data.subset(split.validation)
        return SearchTask(model, example, few.x, val.x, val.y, describe_split(cfg, data, split),
                          top1(model, val.x, val.y))
    task = default_task(progress=on_train_epoch, shots=cfg.shots)
    few = task.data.subset(task.split.few_shot)
    val = task.data.subset(task.split.validation)
    split = {"data": task.data.name, **task.split.describe()}
    return SearchTask(task.model, task.example_input, few.x, val.x, val.y, split, task.validation_accuracy)


def base_architecture(base: dict) -> nn.Module:
    """The structure a compressed variant is cut from when its weights come from elsewhere (an exported
    state dict): the named embedded model, the user's factory called, or the user's .pt2 rebuilt."""
    try:
        if base.get("factory"):
            return call_factory(base["factory"]).eval()
        if base.get("export"):
            return load_exported_model(Path(base["export"]))
    except ValueError as e:
        raise UserError(str(e)) from None
    if base.get("name") not in MODELS:
        raise UserError(f"unknown base model '{base.get('name')}'; this version of hilas knows: {', '.join(MODELS)}")
    return DigitsResNet().eval()


def make_space(task: SearchTask, cfg: RunConfig, on_progress: Callable[[str, int, int], None] | None = None,
               run_dir: Path | None = None) -> ComposedSpace | BinaryWidthSpace:
    """The run's space; a binary one trains its supernet first (once: it is cached), reporting its epochs.
    With `run_dir`, dropped blocks carry the adapters that run trained (see `recoverability`)."""
    if cfg.binary:
        return binary_space(task, cfg, on_progress)
    adapters = load_adapters(run_dir) if run_dir is not None else None
    return compose_space(task.model, task.example_input, masks=cfg.masks, drops=cfg.drops, adapters=adapters)


def compose_space(model: nn.Module, example_input: torch.Tensor, *, masks: bool, drops: bool,
                  adapters: dict[str, DropAdapters] | None = None, ranking: Sequence[str] = ()) -> ComposedSpace:
    """The run's space over `model`: block drops (with their PRACTISE adapters and ranking, where the run
    has them), then filter masks, as the config enables them."""
    parts = []
    if drops:
        parts.append(BlockDropSpace(model, example_input, adapters=adapters, ranking=ranking))
    if masks:
        parts.append(FilterMaskSpace(model, example_input))
    return ComposedSpace(parts)


def check_searchable(task: SearchTask, cfg: RunConfig) -> None:
    """Before a run starts: the user's model yields a space whose every seed (each block dropped, the
    importance masks) builds and runs; otherwise one line naming the layer at fault."""
    if not cfg.user_model or cfg.binary:
        return
    try:
        check_space(compose_space(task.model, task.example_input, masks=cfg.masks, drops=cfg.drops))
    except ValueError as e:
        raise UserError(str(e)) from None
    except Exception as e:  # Torch-Pruning failing to trace the model
        raise UserError(f"the dependency graph cannot be built for the model: {type(e).__name__}: "
                        f"{' '.join(str(e).split())}") from None
