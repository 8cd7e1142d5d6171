"""Few-shot knowledge distillation from the original model: the search's optional accuracy proxy and the
recovery of the front.

The student learns the teacher's softened logits (temperature T, Hinton et al.) on the few-shot images,
shifted a little. A `Recipe` says everything else: steps, learning rate, batch size, how BatchNorm is
treated, and the other ingredients (mixup; the teacher's intermediate features at named layers through
1x1 regressors, as FitNets does). Its defaults are the best recipe of the ablation in
`benchmarks/recovery_ablation.py` (see benchmarks/README.md): logits and stage features, BatchNorm in
training mode, a learning rate of 3e-3 on a cosine schedule, no mixup.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .accuracy import recalibrate_batchnorm

TEMPERATURE = 4.0
FIT_IMAGES = 256  # images whose features start each feature regressor (a least-squares fit)
BATCHNORM_MODES = ("train", "frozen")
_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a student is distilled. Every field is stored with what it produced.

    `batchnorm` "train" normalises each batch by its own statistics and lets the running ones follow
    (they are re-estimated on all images at the end either way); "frozen" keeps the statistics
    re-estimated before the first step. `shift` is the largest shift, as a fraction of the image size
    (1/14: 2 pixels at 28-32 px). `feature_weight` > 0 adds the relative feature error at the layers
    given to `distill`. `mixup` blends each image with another of its batch.
    """

    steps: int = 300
    lr: float = 3e-3
    batch_size: int = 64
    temperature: float = TEMPERATURE
    batchnorm: str = "train"
    shift: float = 1 / 14
    mixup: bool = False
    feature_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or not self.lr > 0 or not self.temperature > 0:
            raise ValueError(f"a recipe needs steps >= 0, batch_size >= 1, lr > 0 and temperature > 0; got {self}")
        if self.batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"batchnorm must be one of {', '.join(BATCHNORM_MODES)}, got {self.batchnorm!r}")
        if not 0 <= self.shift < 0.5 or self.feature_weight < 0:
            raise ValueError(f"shift must be in [0, 0.5) and feature_weight at least 0; got {self}")

    @classmethod
    def from_options(cls, options: dict) -> Recipe:
        """The default recipe with the settings in `options` (name -> value) changed; one line naming the
        setting for an unknown name or a value of the wrong type."""
        fields = {f.name: type(getattr(cls(), f.name)) for f in dataclasses.fields(cls)}
        for name, value in options.items():
            if name not in fields:
                raise ValueError(f"unknown recovery recipe setting '{name}'; the settings: {', '.join(fields)}")
            wanted = fields[name]
            fits = isinstance(value, wanted) and not (wanted is int and isinstance(value, bool))
            if not fits and not (wanted is float and isinstance(value, int) and not isinstance(value, bool)):
                raise ValueError(f"recovery recipe setting {name} = {value!r} must be {_KINDS[wanted]} "
                                 f"(default {getattr(cls(), name)!r})")
        return dataclasses.replace(cls(), **{n: fields[n](v) for n, v in options.items()})

    def describe(self) -> str:
        """The recipe in words, for the store and an export's README."""
        parts = [f"{self.steps} steps of logit distillation (T = {self.temperature:g}, Adam {self.lr:g}, cosine, "
                 f"batch {self.batch_size}, shifts up to {self.shift:.3g} of the image, BatchNorm {self.batchnorm})"]
        if self.mixup:
            parts.append("mixup")
        if self.feature_weight:
            parts.append(f"stage features through 1x1 regressors (weight {self.feature_weight:g})")
        return " + ".join(parts)


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


def shifted(x: torch.Tensor, rng: np.random.Generator, fraction: float = 1 / 14) -> torch.Tensor:
    """`x` moved by up to `fraction` of its size (at least a pixel) in each direction, zero-filled (the same
    shift for the batch); unmoved for a fraction of 0."""
    if fraction <= 0:
        return x
    h, w = x.shape[2:]
    limit_h, limit_w = max(1, int(h * fraction)), max(1, int(w * fraction))
    dy, dx = int(rng.integers(-limit_h, limit_h + 1)), int(rng.integers(-limit_w, limit_w + 1))
    padded = F.pad(x, (limit_w, limit_w, limit_h, limit_h))
    return padded[:, :, limit_h + dy:limit_h + dy + h, limit_w + dx:limit_w + dx + w]


def mixed(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each image blended with another of the batch by a random weight (mixup): the teacher's soft labels on
    such blends tell the student about more than the few images themselves."""
    weight = torch.from_numpy(rng.uniform(0.0, 1.0, (len(x), 1, 1, 1)).astype(np.float32)).to(x.device)
    return weight * x + (1 - weight) * x[torch.from_numpy(rng.permutation(len(x))).to(x.device)]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = TEMPERATURE) -> torch.Tensor:
    """KL divergence between softened distributions, scaled by T^2 so its gradients keep their size."""
    return F.kl_div(F.log_softmax(student_logits / temperature, 1), F.softmax(teacher_logits / temperature, 1),
                    reduction="batchmean") * temperature ** 2


def relative_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher) / teacher.pow(2).mean().clamp_min(1e-12)


def distill(student: nn.Module, teacher: nn.Module, x: np.ndarray, recipe: Recipe = Recipe(), *,
            layers: Sequence[str] = (), seed: int = 0, device: torch.device | str = "cpu",
            progress: Callable[[int, int], None] | None = None) -> nn.Module:
    """Train `student` (all its weights) by `recipe` to match `teacher` on the images `x`, on `device`.

    `layers` name modules of both models whose outputs are matched (with `recipe.feature_weight` > 0) where
    their spatial sizes agree. Returns the student on the CPU in eval mode, its BatchNorm statistics
    re-estimated on `x`; the teacher is left as it was.
    """
    student = recalibrate_batchnorm(student, x)
    if recipe.steps == 0:
        return student
    device = torch.device(device)
    teacher = teacher if device.type == "cpu" else copy.deepcopy(teacher).to(device)
    teacher_was_training = teacher.training
    teacher.eval()
    student.to(device)
    images = torch.from_numpy(x).to(device)
    regressors, matched = _regressors(student, teacher, images, layers if recipe.feature_weight else ())
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = [p for p in student.parameters() if p.requires_grad] + list(regressors.parameters())
    optimizer = torch.optim.Adam(params, lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.steps)
    student.train(recipe.batchnorm == "train")
    with captured(student, matched) as s_feats, captured(teacher, matched) as t_feats:
        for step in range(recipe.steps):
            chosen = rng.choice(len(images), min(recipe.batch_size, len(images)), replace=False)
            batch = shifted(images[torch.from_numpy(chosen).to(device)], rng, recipe.shift)
            if recipe.mixup:
                batch = mixed(batch, rng)
            with torch.no_grad():
                t_logits = teacher(batch)
            loss = kd_loss(student(batch), t_logits, recipe.temperature)
            for name in matched:
                loss = loss + recipe.feature_weight * relative_mse(regressors[name.replace(".", "/")](s_feats[name]),
                                                                   t_feats[name]) / len(matched)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if progress:
                progress(step + 1, recipe.steps)
    teacher.train(teacher_was_training)
    return recalibrate_batchnorm(student.cpu().eval(), x)


def _regressors(student: nn.Module, teacher: nn.Module, images: torch.Tensor,
                layers: Sequence[str]) -> tuple[nn.ModuleDict, list[str]]:
    """A 1x1 regressor per layer whose outputs have the same spatial size in both models, and those layers."""
    if not layers:
        return nn.ModuleDict(), []
    with torch.no_grad(), captured(student, layers) as s_seen, captured(teacher, layers) as t_seen:
        student(images[:FIT_IMAGES])
        teacher(images[:FIT_IMAGES])
        matched = [n for n in layers if n in s_seen and n in t_seen and s_seen[n].dim() == t_seen[n].dim() == 4
                   and s_seen[n].shape[2:] == t_seen[n].shape[2:]]
        regressors = nn.ModuleDict({n.replace(".", "/"): _regressor(s_seen[n], t_seen[n]) for n in matched})
    return regressors.to(images.device), matched


def _regressor(student: torch.Tensor, teacher: torch.Tensor) -> nn.Conv2d:
    """1x1 conv from the student's feature channels to the teacher's, started at the least-squares fit on the
    few-shot images' features, so feature matching pulls towards the teacher from the first step."""
    s = student.permute(0, 2, 3, 1).reshape(-1, student.shape[1]).cpu()
    t = teacher.permute(0, 2, 3, 1).reshape(-1, teacher.shape[1]).cpu()
    conv = nn.Conv2d(student.shape[1], teacher.shape[1], 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.linalg.lstsq(s, t).solution.T.reshape(conv.weight.shape))
    return conv
