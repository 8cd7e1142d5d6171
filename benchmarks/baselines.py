"""What a careful user does without hilas, written as they would write it, sharing no training code with hilas:
Torch-Pruning's uniform L1 pruner, and a plain distillation loop to recover what it pruned.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PLAIN_STEPS, PLAIN_LR, PLAIN_BATCH, PLAIN_T, PLAIN_SHIFT = 300, 1e-3, 64, 4.0, 2


def plain_loop(steps: int = PLAIN_STEPS) -> str:
    """The plain loop in words."""
    return (f"BatchNorm re-estimated, then {steps} steps of logit distillation (T = {PLAIN_T:g}, Adam {PLAIN_LR:g}, "
            f"batch {PLAIN_BATCH}, shifts of up to {PLAIN_SHIFT} pixels, training mode)")


def pruned_uniformly(model: nn.Module, example_input: torch.Tensor, ratio: float) -> nn.Module:
    """A copy of `model` with `ratio` of every layer's channels removed by L1 norm (the classifier's outputs kept)."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    classifier = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1:]
    tp.pruner.MagnitudePruner(pruned, example_input, importance=tp.importance.MagnitudeImportance(p=1),
                              pruning_ratio=ratio, ignored_layers=classifier).step()
    return pruned


def plain_distillation(student: nn.Module, teacher: nn.Module, x: np.ndarray, steps: int = PLAIN_STEPS,
                       seed: int = 0) -> nn.Module:
    """The twenty-line loop of the recovery issue (#21): BatchNorm statistics re-estimated on the few-shot
    images, then `steps` steps of Adam on the KL divergence to the teacher's softened logits, random shifts
    of the batch, the student in training mode; returned in eval mode."""
    torch.manual_seed(seed)
    images = torch.from_numpy(x)
    for m in student.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    student.train()
    with torch.no_grad():
        student(images)
    for m in student.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    teacher.eval()
    optimizer = torch.optim.Adam(student.parameters(), lr=PLAIN_LR)
    for _ in range(steps):
        batch = images[torch.randint(len(images), (PLAIN_BATCH,))]
        dy, dx = torch.randint(-PLAIN_SHIFT, PLAIN_SHIFT + 1, (2,)).tolist()
        batch = torch.roll(batch, (dy, dx), (2, 3))
        with torch.no_grad():
            soft = F.softmax(teacher(batch) / PLAIN_T, 1)
        loss = F.kl_div(F.log_softmax(student(batch) / PLAIN_T, 1), soft, reduction="batchmean") * PLAIN_T ** 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return student.eval()
