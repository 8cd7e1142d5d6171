"""The user's own model and data, from the run config, checked before any run directory is created.

Each problem (a file that cannot be read, a layer that cannot run, a class with too few images, a
label count or an image size that does not fit the model) is one UserError line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from hilas.devices import MeasurementError, export_onnx
from hilas.evaluators import (
    LabelledImages,
    Split,
    default_task,
    few_shot_split,
    load_digits,
    load_exported_model,
    load_factory_model,
    load_idx,
    load_image_folder,
    load_npz,
    normalized,
)
from hilas.search.config import RunConfig
from hilas.search.errors import UserError
from hilas.spaces import run_model


def load_model(cfg: RunConfig, on_train_epoch: Callable[[int, int], None] | None = None
               ) -> tuple[nn.Module, torch.Tensor]:
    """The base model and an example input of the config's shape."""
    try:
        if cfg.model_export:
            model = load_exported_model(Path(cfg.model_export))
        elif cfg.model_factory:
            model = load_factory_model(cfg.model_factory, Path(cfg.model_weights) if cfg.model_weights else None)
        else:
            task = default_task(progress=on_train_epoch)
            return task.model, torch.zeros(cfg.input_shape) if cfg.input_shape else task.example_input
    except ValueError as e:
        raise UserError(str(e)) from None
    return model, torch.zeros(cfg.input_shape)


def load_data(cfg: RunConfig, example_input: torch.Tensor, validation: bool = False) -> LabelledImages:
    """The config's images (or, with `validation`, its held-out validation images), normalised as the model
    expects."""
    path = Path(cfg.validation_path if validation else cfg.data_path) if cfg.data != "digits" else None
    labels = cfg.validation_labels if validation else cfg.data_labels
    try:
        if cfg.data == "image-folder":
            data = load_image_folder(path, tuple(example_input.shape[1:]))
        elif cfg.data == "npz":
            data = load_npz(path)
        elif cfg.data == "idx":
            data = load_idx(path, Path(labels))
        else:
            data = load_digits()
        if cfg.mean is not None or cfg.std is not None:
            data = normalized(data, cfg.mean or (0.0,), cfg.std or (1.0,))
    except ValueError as e:
        raise UserError(str(e)) from None
    return data


def load_split_data(cfg: RunConfig, example_input: torch.Tensor) -> tuple[LabelledImages, Split]:
    """The config's images and their split. With [data] validation_path, the few-shot images come from
    path and every image of validation_path validates (say, the model's own training images to compress
    with, and a held-out set to score on); otherwise both come, disjoint, from path."""
    data = load_data(cfg, example_input)
    split = split_data(cfg, data)
    if cfg.validation_path is None:
        return data, split
    held_out = load_data(cfg, example_input, validation=True)
    if held_out.x.shape[1:] != data.x.shape[1:] or held_out.classes != data.classes \
            or held_out.n_classes != data.n_classes:
        raise UserError(f"{held_out.name} does not match {data.name}: its images are {_shape(held_out.x.shape[1:])} "
                        f"in {held_out.n_classes} classes, against {_shape(data.x.shape[1:])} in {data.n_classes}")
    both = LabelledImages(np.concatenate([data.x, held_out.x]), np.concatenate([data.y, held_out.y]),
                          f"{data.name} + {held_out.name}", data.classes)
    validation = np.arange(len(data.y), len(both.y), dtype=np.int64)
    return both, Split(np.empty(0, dtype=np.int64), split.few_shot, validation, split.seed, split.shots)


def check_inputs(model: nn.Module, example_input: torch.Tensor, data: LabelledImages) -> None:
    """The model runs on the data's images (one and several at a time), has one output per class of the
    data, and exports to ONNX (what the devices measure)."""
    if tuple(data.x.shape[1:]) != tuple(example_input.shape[1:]):
        raise UserError(f"{data.name}: the images are {_shape(data.x.shape[1:])} but the model takes "
                        f"{_shape(example_input.shape[1:])} ([model] input_shape)")
    try:
        out = run_model(model, example_input)
        run_model(model, torch.from_numpy(data.x[:2]), "the model, given two images at once,")
    except ValueError as e:
        raise UserError(str(e)) from None
    if out.dim() != 2 or out.shape[0] != 1:
        raise UserError(f"the model returns shape {list(out.shape)} for one image; hilas needs [1, classes] scores")
    if out.shape[1] != data.n_classes:
        raise UserError(f"{data.name} has {data.n_classes} classes (labels 0..{data.n_classes - 1}) but the model "
                        f"has {out.shape[1]} outputs; the label count must match the model's outputs")
    try:
        export_onnx(model, example_input, "input-check")
    except MeasurementError as e:
        raise UserError(f"the model cannot be exported to ONNX, which the devices measure: {e}") from None


def split_data(cfg: RunConfig, data: LabelledImages) -> Split:
    """The few-shot images of `data` and, unless [data] validation_path validates elsewhere, its validation
    images."""
    validation = 0 if cfg.validation_path is not None else cfg.validation
    try:
        return few_shot_split(data, shots=cfg.shots, seed=cfg.data_seed, validation=validation)
    except ValueError as e:
        raise UserError(str(e)) from None


def describe_split(cfg: RunConfig, data: LabelledImages, split: Split) -> dict:
    """The split as the run stores it: where the data came from, a digest of it, and the indices."""
    digest = hashlib.sha256(np.ascontiguousarray(data.x).tobytes() + data.y.tobytes()).hexdigest()[:16]
    return {"data": data.name, "format": cfg.data, "classes": list(data.classes), "images": len(data.y),
            "sha256": digest, "validation_per_class": cfg.validation, **split.describe()}


def _shape(shape) -> str:
    return "x".join(str(int(d)) for d in shape)
