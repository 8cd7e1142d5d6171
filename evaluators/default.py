"""The embedded default: a small residual CNN trained on scikit-learn's digits, cached on first use."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .accuracy import top1
from .data import LabelledImages, Split, load_digits, make_split

SPLIT_SEED = 0
SHOTS = 10
VALIDATION_FRACTION = 0.3
TRAIN_SEED = 0
EPOCHS = 30
CACHE_VERSION = "digits-resnet-v1"


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a shortcut (1x1 conv when the shape changes), then relu."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class DigitsResNet(nn.Module):
    """Stem, two stages of two blocks (48 channels at 8x8, 96 at 4x4), pooling, classifier."""

    def __init__(self, widths: tuple[int, int] = (48, 96), n_classes: int = 10):
        super().__init__()
        w1, w2 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, w1, 3, 1, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU())
        self.stage1 = nn.Sequential(BasicBlock(w1, w1), BasicBlock(w1, w1))
        self.stage2 = nn.Sequential(BasicBlock(w1, w2, 2), BasicBlock(w2, w2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w2, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stage2(self.stage1(self.stem(x)))), 1))


@dataclass(frozen=True)
class DefaultTask:
    """Everything a search on the embedded default needs."""

    model: nn.Module
    data: LabelledImages
    split: Split
    example_input: torch.Tensor
    validation_accuracy: float


def cache_dir() -> Path:
    """Where trained defaults live: $HILAS_CACHE_DIR, else the user cache directory."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("HILAS_CACHE_DIR") or user_cache_dir("hilas"))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int,
          progress=None) -> nn.Module:
    """Plain SGD with momentum and a cosine schedule, small random shifts as augmentation."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_per_epoch = (len(xs) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=epochs * steps_per_epoch)
    model.train()
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(len(xs)))
        for start in range(0, len(xs), 64):
            idx = order[start:start + 64]
            batch = xs[idx]
            dx, dy = rng.integers(-1, 2, size=2)
            batch = torch.roll(batch, shifts=(int(dx), int(dy)), dims=(2, 3))
            loss = nn.functional.cross_entropy(model(batch), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if progress:
            progress(epoch + 1, epochs)
    return model.eval()


def default_task(progress=None) -> DefaultTask:
    """The digits model, trained on first use (about a minute on 2 cores) and cached."""
    data = load_digits()
    split = make_split(data.y, shots=SHOTS, validation_fraction=VALIDATION_FRACTION, seed=SPLIT_SEED)
    model = DigitsResNet()
    path = cache_dir() / f"{CACHE_VERSION}.pt"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
        accuracy = json.loads(meta_path.read_text())["validation_accuracy"]
    else:
        start = time.perf_counter()
        train(model, data.x[split.train], data.y[split.train], epochs=EPOCHS, seed=TRAIN_SEED, progress=progress)
        val = data.subset(split.validation)
        accuracy = top1(model, val.x, val.y)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
        meta_path.write_text(json.dumps({"validation_accuracy": accuracy, "epochs": EPOCHS, "seed": TRAIN_SEED,
                                         "split_seed": SPLIT_SEED, "train_seconds": time.perf_counter() - start}))
    example = torch.zeros(1, *data.x.shape[1:])
    return DefaultTask(model, data, split, example, accuracy)
