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


class ResNet(nn.Module):
    """A stem, stages of residual blocks (each stage after the first halves the size), pooling and a
    classifier. Stages are the modules `stage1`, `stage2`...: the names distillation matches features at."""

    def __init__(self, widths: tuple[int, ...], blocks: int = 2, in_channels: int = 1, stem_stride: int = 1,
                 n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        cin = widths[0]
        for i, width in enumerate(widths):
            stage = [BasicBlock(cin if b == 0 else width, width, 2 if b == 0 and i > 0 else 1) for b in range(blocks)]
            self.add_module(f"stage{i + 1}", nn.Sequential(*stage))
            cin = width
        self.stages = len(widths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(self.stages):
            x = getattr(self, f"stage{i + 1}")(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class DigitsResNet(ResNet):
    """Stem, two stages of two blocks (48 channels at 8x8, 96 at 4x4), pooling, classifier."""

    def __init__(self, widths: tuple[int, int] = (48, 96), n_classes: int = 10):
        super().__init__(widths, n_classes=n_classes)


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
          progress=None, shift: int = 1, flip: bool = False) -> nn.Module:
    """Plain SGD with momentum and a one-cycle schedule; as augmentation, random shifts of up to `shift`
    pixels (one per batch) and, with `flip`, each image mirrored left-right with probability 1/2."""
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
            dx, dy = rng.integers(-shift, shift + 1, size=2)
            batch = torch.roll(batch, shifts=(int(dx), int(dy)), dims=(2, 3))
            if flip:
                mirrored = torch.from_numpy(rng.random(len(batch)) < 0.5).view(-1, 1, 1, 1)
                batch = torch.where(mirrored, batch.flip(3), batch)
            loss = nn.functional.cross_entropy(model(batch), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if progress:
            progress(epoch + 1, epochs)
    return model.eval()


def default_task(progress=None, shots: int = SHOTS) -> DefaultTask:
    """The digits model, trained on first use (about a minute on 2 cores) and cached. Its training and
    validation images do not depend on `shots`, the few-shot images per class drawn from the training part."""
    data = load_digits()
    split = make_split(data.y, shots=shots, validation_fraction=VALIDATION_FRACTION, seed=SPLIT_SEED)
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
