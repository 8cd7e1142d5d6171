"""One weight-sharing supernet, trained once, from which every width inherits its weights.

The supernet is slimmable (Yu et al., ICLR 2019): a narrower network is its first channels. Each
step trains four widths on the same batch, the sandwich rule (Yu & Huang, "Universally Slimmable
Networks", ICCV 2019): the largest, the smallest and two drawn at random, so the extremes bound
every width in between; all four learn from the full-precision teacher's softened logits and the
labels (knowledge distillation). A candidate then takes its channels and has its BatchNorm
statistics re-estimated (the search's accuracy proxy), so scoring it costs no training.

Trained supernets are cached beside the default model, keyed by everything that changes them
(the teacher's weights included).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .default import cache_dir
from .distillation import kd_loss, one_thread, shifted

CACHE_VERSION = "supernet-v1"


class Slimmable(Protocol):
    """A network that runs on the first `widths[s]` channels of each stage s."""

    def set_widths(self, widths: Sequence[int]) -> None: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class WidthChoices:
    """Every stage of a slimmable network takes one of `options` channels."""

    options: tuple[int, ...]
    stages: int

    @property
    def largest(self) -> tuple[int, ...]:
        return (max(self.options),) * self.stages

    @property
    def smallest(self) -> tuple[int, ...]:
        return (min(self.options),) * self.stages

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(w) for w in rng.choice(self.options, self.stages))


@dataclass(frozen=True)
class SupernetTraining:
    """How the supernet is trained: the budget and the loss. Part of the cache key."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    random_widths: int = 2  # sandwich rule: the largest, the smallest and this many random widths per step
    kd_weight: float = 0.5  # loss = kd_weight * KD(teacher) + (1 - kd_weight) * cross-entropy
    seed: int = 0


def train_supernet(supernet: nn.Module, choices: WidthChoices, teacher: nn.Module, x: np.ndarray, y: np.ndarray,
                   training: SupernetTraining = SupernetTraining(),
                   progress: Callable[[int, int], None] | None = None) -> nn.Module:
    """Train `supernet` (a Slimmable) in place on (x, y) by the sandwich rule with distillation from `teacher`.

    Adam with a cosine schedule, small random shifts as augmentation, one thread (the same weights on
    any machine). Returns the supernet set to its largest widths, in eval mode.
    """
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    steps_per_epoch = -(-len(images) // training.batch_size)
    optimizer = torch.optim.Adam(supernet.parameters(), lr=training.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, training.epochs * steps_per_epoch)
    teacher.eval()
    supernet.train()
    with one_thread():
        for epoch in range(training.epochs):
            order = torch.from_numpy(rng.permutation(len(images)))
            for start in range(0, len(images), training.batch_size):
                index = order[start:start + training.batch_size]
                batch = shifted(images[index], rng)
                with torch.no_grad():
                    soft = teacher(batch)
                optimizer.zero_grad()
                sandwich = [choices.largest, choices.smallest,
                            *(choices.sample(rng) for _ in range(training.random_widths))]
                for widths in sandwich:
                    supernet.set_widths(widths)
                    logits = supernet(batch)
                    loss = (training.kd_weight * kd_loss(logits, soft)
                            + (1 - training.kd_weight) * F.cross_entropy(logits, labels[index]))
                    loss.backward()
                optimizer.step()
                schedule.step()
            if progress:
                progress(epoch + 1, training.epochs)
    supernet.set_widths(choices.largest)
    return supernet.eval()


def cached_supernet(supernet: nn.Module, choices: WidthChoices, teacher: nn.Module, x: np.ndarray, y: np.ndarray,
                    training: SupernetTraining = SupernetTraining(), name: str = "supernet",
                    progress: Callable[[int, int], None] | None = None) -> tuple[nn.Module, dict]:
    """`supernet` with trained weights, from the cache or trained now; and what its training was.

    The cache key covers the supernet's structure, the choices, the training settings, the teacher's
    weights and the data, so changing any of them trains again.
    """
    key = _key(supernet, choices, teacher, x, y, training)
    path = cache_dir() / f"{name}-{CACHE_VERSION}-{key}.pt"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        supernet.load_state_dict(torch.load(path, weights_only=True))
        supernet.set_widths(choices.largest)
        return supernet.eval(), json.loads(meta_path.read_text())
    started = time.perf_counter()
    train_supernet(supernet, choices, teacher, x, y, training, progress)
    meta = {"training": training.__dict__, "choices": {"options": list(choices.options), "stages": choices.stages},
            "images": len(x), "train_seconds": round(time.perf_counter() - started, 1), "threads": 1}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(supernet.state_dict(), tmp)
    os.replace(tmp, path)
    meta_path.write_text(json.dumps(meta, indent=2))
    return supernet, meta


def _key(supernet: nn.Module, choices: WidthChoices, teacher: nn.Module, x: np.ndarray, y: np.ndarray,
         training: SupernetTraining) -> str:
    digest = hashlib.sha256()
    for model in (supernet, teacher):
        for name, tensor in model.state_dict().items():
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
    for tensor in teacher.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    digest.update(json.dumps([list(choices.options), choices.stages, training.__dict__], sort_keys=True).encode())
    return digest.hexdigest()[:16]
