"""PRACTISE recoverability (Wang & Wu, CVPR 2023): how well a dropped block can be recovered by training
only a few adapter weights to mimic the original model's features on the few-shot images.

The caller drops the block and hooks identity-initialised adapters around it (see `spaces.adapters`);
this module trains just those parameters to match the features the original model feeds its
classifier, and reports the error left: the mean squared feature difference relative to the features'
mean square. A block whose drop leaves a small error for the time it saves is worth dropping.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .distillation import captured, relative_mse

ADAPTER_LR = 3e-3


def feature_error(student: nn.Module, teacher: nn.Module, x: np.ndarray, layer: str) -> float:
    """Relative squared error between the inputs the two models give `layer` (their classifier) on `x`."""
    images = torch.from_numpy(x)
    with torch.no_grad(), captured(student.eval(), [layer], inputs=True) as s, \
            captured(teacher.eval(), [layer], inputs=True) as t:
        student(images)
        teacher(images)
        return float(relative_mse(s[layer], t[layer]))


def train_adapters(student: nn.Module, parameters: Sequence[nn.Parameter], teacher: nn.Module, x: np.ndarray, *,
                   layer: str, steps: int, batch_size: int = 32, seed: int = 0) -> float:
    """Train only `parameters` of `student` for `steps` Adam steps so the inputs of `layer` match the
    teacher's on the images `x`; returns the recovered error (`feature_error` afterwards).

    Both models stay in eval mode: BatchNorm statistics are the original ones, as PRACTISE keeps them.
    """
    student.eval()
    teacher.eval()
    images = torch.from_numpy(x)
    with torch.no_grad(), captured(teacher, [layer], inputs=True) as t:
        teacher(images)
        targets = t[layer].detach()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(list(parameters), lr=ADAPTER_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    with captured(student, [layer], inputs=True) as s:
        for _ in range(steps):
            idx = torch.from_numpy(rng.choice(len(images), min(batch_size, len(images)), replace=False))
            student(images[idx])
            loss = relative_mse(s[layer], targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return feature_error(student, teacher, x, layer)
