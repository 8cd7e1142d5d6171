"""Model + data -> accuracy (and recovery)."""

from .accuracy import proxy_accuracy, recalibrate_batchnorm, top1
from .data import LabelledImages, Split, class_orders, few_shot_split, load_digits, make_split
from .datasets import load_idx, load_image_folder, load_npz, normalized, read_idx
from .default import DefaultTask, DigitsResNet, ResNet, default_task
from .distill import Recipe, distill, kd_loss, one_thread
from .host import HOST_DEVICES, host_device
from .models import call_factory, load_exported_model, load_factory_model, load_state_dict_file
from .practise import feature_error, train_adapters
from .supernet import SupernetTraining, WidthChoices, cached_supernet, train_supernet

__all__ = ["HOST_DEVICES", "DefaultTask", "DigitsResNet", "ResNet", "LabelledImages", "Recipe", "Split", "SupernetTraining", "WidthChoices",
           "cached_supernet", "call_factory", "class_orders", "default_task", "distill", "feature_error",
           "few_shot_split", "host_device",
           "kd_loss", "load_digits", "load_exported_model", "load_factory_model", "load_idx",
           "load_image_folder", "load_npz", "load_state_dict_file", "make_split", "normalized",
           "one_thread", "proxy_accuracy", "read_idx", "recalibrate_batchnorm", "top1", "train_adapters",
           "train_supernet"]
