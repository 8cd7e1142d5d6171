"""Model + data -> accuracy."""

from .accuracy import proxy_accuracy, recalibrate_batchnorm, top1
from .data import LabelledImages, Split, load_digits, make_split
from .default import DefaultTask, DigitsResNet, default_task

__all__ = ["DefaultTask", "DigitsResNet", "LabelledImages", "Split", "default_task", "load_digits", "make_split",
           "proxy_accuracy", "recalibrate_batchnorm", "top1"]
