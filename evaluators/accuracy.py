"""Top-1 accuracy, and BatchNorm re-calibration: the two steps of the search's accuracy proxy
(`hilas.search.setup.proxy`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def top1(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Fraction of `x` whose arg-max logit equals the label."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(torch.from_numpy(x[start:start + batch_size]))
            correct += int((logits.argmax(1).numpy() == y[start:start + batch_size]).sum())
    return correct / len(x)


def recalibrate_batchnorm(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> nn.Module:
    """Replace every BatchNorm's running statistics with those of `x`.

    Pruning and dropping blocks shift the activation statistics each BN was trained on; re-estimating
    them on a few images recovers most of that loss without touching a weight.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all calibration batches
    model.train()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            model(torch.from_numpy(x[start:start + batch_size]))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    return model.eval()

