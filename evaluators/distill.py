"""Few-shot knowledge distillation from the original model: the search's optional accuracy proxy and the
recovery of the front.

The student learns the teacher's softened logits (temperature T, Hinton et al.) and its intermediate
features at named layers (FitNets): at each layer a 1x1 regressor maps the student's channels (fewer,
after pruning) onto the teacher's, and the mean squared error is taken relative to the teacher
features' mean square, so layers of any scale weigh the same. Only the few-shot images are used,
shifted a little and blended in pairs (mixup); BatchNorm statistics stay frozen (re-estimated on the
few-shot images first), since a few hundred images estimate them better once than batch by batch.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .accuracy import recalibrate_batchnorm

TEMPERATURE = 4.0
FIT_IMAGES = 256  # images whose features start each feature regressor (a least-squares fit)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Training on one thread: the same weights come out in any process, whatever its thread count (so an
    export reproduces the accuracy the search stored)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def captured(model: nn.Module, layers: Sequence[str], *, inputs: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Outputs (or inputs) of the named layers during the forward passes run inside the block. Names the model
    lacks (a block the candidate dropped) are left out of what is seen."""
    seen: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in (n for n in layers if n in modules):
        if inputs:
            handles.append(modules[name].register_forward_pre_hook(
                lambda mod, args, name=name: seen.__setitem__(name, args[0])))
        else:
            handles.append(modules[name].register_forward_hook(
                lambda mod, args, out, name=name: seen.__setitem__(name, out)))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def shifted(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """`x` moved by up to 1/14 of its size in each direction, zero-filled (the same shift for the batch)."""
    h, w = x.shape[2:]
    limit_h, limit_w = max(1, h // 14), max(1, w // 14)
    dy, dx = int(rng.integers(-limit_h, limit_h + 1)), int(rng.integers(-limit_w, limit_w + 1))
    padded = F.pad(x, (limit_w, limit_w, limit_h, limit_h))
    return padded[:, :, limit_h + dy:limit_h + dy + h, limit_w + dx:limit_w + dx + w]


def mixed(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each image blended with another of the batch by a random weight (mixup): the teacher's soft labels on
    such blends tell the student about more than the few images themselves."""
    weight = torch.from_numpy(rng.uniform(0.0, 1.0, (len(x), 1, 1, 1)).astype(np.float32))
    return weight * x + (1 - weight) * x[torch.from_numpy(rng.permutation(len(x)))]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = TEMPERATURE) -> torch.Tensor:
    """KL divergence between softened distributions, scaled by T^2 so its gradients keep their size."""
    return F.kl_div(F.log_softmax(student_logits / temperature, 1), F.softmax(teacher_logits / temperature, 1),
                    reduction="batchmean") * temperature ** 2


def relative_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher) / teacher.pow(2).mean().clamp_min(1e-12)


def distill(student: nn.Module, teacher: nn.Module, x: np.ndarray, *, steps: int, layers: Sequence[str] = (),
            feature_weight: float = 1.0, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> nn.Module:
    """Train `student` (all its weights) for `steps` steps to match `teacher` on the images `x`.

    `layers` name modules of both models whose outputs are matched where their spatial sizes agree.
    Returns the student in eval mode, its BatchNorm statistics re-estimated on `x`.
    """
    student = recalibrate_batchnorm(student, x)
    teacher.eval()
    images = torch.from_numpy(x)
    with torch.no_grad(), captured(student, layers) as s_seen, captured(teacher, layers) as t_seen:
        student(images[:FIT_IMAGES])
        teacher(images[:FIT_IMAGES])
        matched = [n for n in layers if n in s_seen and n in t_seen and s_seen[n].dim() == t_seen[n].dim() == 4
                   and s_seen[n].shape[2:] == t_seen[n].shape[2:]]
        regressors = nn.ModuleDict({n.replace(".", "/"): _regressor(s_seen[n], t_seen[n]) for n in matched})
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = [p for p in student.parameters() if p.requires_grad] + list(regressors.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    with captured(student, matched) as s_feats, captured(teacher, matched) as t_feats:
        for step in range(steps):
            batch = mixed(shifted(images[rng.choice(len(images), min(batch_size, len(images)), replace=False)], rng),
                          rng)
            with torch.no_grad():
                t_logits = teacher(batch)
            s_logits = student(batch)
            loss = kd_loss(s_logits, t_logits)
            for name in matched:
                loss = loss + feature_weight * relative_mse(regressors[name.replace(".", "/")](s_feats[name]),
                                                            t_feats[name]) / len(matched)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if progress:
                progress(step + 1, steps)
    return recalibrate_batchnorm(student.eval(), x)


def _regressor(student: torch.Tensor, teacher: torch.Tensor) -> nn.Conv2d:
    """1x1 conv from the student's feature channels to the teacher's, started at the least-squares fit on the
    few-shot images' features, so feature matching pulls towards the teacher from the first step."""
    s = student.permute(0, 2, 3, 1).reshape(-1, student.shape[1])
    t = teacher.permute(0, 2, 3, 1).reshape(-1, teacher.shape[1])
    conv = nn.Conv2d(student.shape[1], teacher.shape[1], 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.linalg.lstsq(s, t).solution.T.reshape(conv.weight.shape))
    return conv
