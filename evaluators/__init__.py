"""Model + data -> accuracy (and recovery)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hilas._lazy import lazy_names

if TYPE_CHECKING:
    from .accuracy import recalibrate_batchnorm, top1
    from .data import LabelledImages, Split, class_orders, few_shot_split, load_digits, make_split
    from .datasets import load_idx, load_image_folder, load_npz, normalized, read_idx
    from .default import DefaultTask, DigitsResNet, ResNet, default_task
    from .distillation import Recipe, distill, kd_loss, one_thread
    from .host import HOST_DEVICES, host_device
    from .models import call_factory, load_exported_model, load_factory_model, load_state_dict_file
    from .practise import feature_error, train_adapters
    from .supernet import SupernetTraining, WidthChoices, cached_supernet, train_supernet

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    ".accuracy": ["recalibrate_batchnorm", "top1"],
    ".data": ["LabelledImages", "Split", "class_orders", "few_shot_split", "load_digits", "make_split"],
    ".datasets": ["load_idx", "load_image_folder", "load_npz", "normalized", "read_idx"],
    ".default": ["DefaultTask", "DigitsResNet", "ResNet", "default_task"],
    ".distillation": ["Recipe", "distill", "kd_loss", "one_thread"],
    ".host": ["HOST_DEVICES", "host_device"],
    ".models": ["call_factory", "load_exported_model", "load_factory_model", "load_state_dict_file"],
    ".practise": ["feature_error", "train_adapters"],
    ".supernet": ["SupernetTraining", "WidthChoices", "cached_supernet", "train_supernet"],
})
