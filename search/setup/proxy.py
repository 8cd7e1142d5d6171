"""The accuracy proxy that scores every candidate of a search: the same code for the search and an export."""

from __future__ import annotations

from torch import nn

from hilas.evaluators import Recipe, distill, one_thread, recalibrate_batchnorm, top1
from hilas.search.config import RunConfig
from hilas.search.setup.task import SearchTask
from hilas.spaces import find_blocks


def feature_layers(model: nn.Module, example_input) -> list[str]:
    """The stages of `model` (the modules holding its residual blocks), whose outputs distillation matches."""
    return list(dict.fromkeys(block.rpartition(".")[0] for block in find_blocks(model, example_input)))


def proxy_model(model: nn.Module, task: SearchTask, cfg: RunConfig, layers: list[str]) -> nn.Module:
    """The candidate as the search scores it: BatchNorm statistics re-estimated on the few-shot images,
    then, with proxy = "distillation", `distillation_steps` steps of distillation from the original model
    (logits and the outputs of `layers`). On one thread, so an export reproduces the same weights."""
    if cfg.proxy == "distillation":
        with one_thread():
            return distill(model, task.model, task.calibration_x, Recipe(steps=cfg.distillation_steps), layers=layers)
    return recalibrate_batchnorm(model, task.calibration_x)


def proxy_accuracy(model: nn.Module, task: SearchTask, cfg: RunConfig, layers: list[str]) -> float:
    """Top-1 of the proxy model on the validation split."""
    return top1(proxy_model(model, task, cfg, layers), task.validation_x, task.validation_y)


def proxy_description(cfg: RunConfig, structure: dict) -> str:
    """What the proxy did to a candidate's weights, in words (for an export's README); `structure` is the
    export's description of the candidate."""
    words = f"BatchNorm statistics re-estimated on the run's {cfg.shots} few-shot images per class"
    if cfg.proxy == "distillation":
        words += f", then {cfg.distillation_steps} steps of distillation from the original model on them"
    if structure["dropped_blocks"] and cfg.drop_recovery_steps:
        words += ("; the 1x1 adapters trained to recover its dropped blocks (PRACTISE) are folded into its "
                  "convolutions")
    return words
