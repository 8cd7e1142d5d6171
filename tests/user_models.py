"""Factories the tests name in configs as `tests.user_models:NAME`, as a user names their own."""

import torch
from torch import nn

from hilas.evaluators import DigitsResNet


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return DigitsResNet(widths=(8, 16))


def three_classes() -> nn.Module:
    return DigitsResNet(widths=(8, 16), n_classes=3)


class Gate(nn.Module):
    """Scales channels by a fixed buffer: Torch-Pruning does not prune buffers, so pruning breaks it."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("scale", torch.ones(1, channels, 1, 1))

    def forward(self, x):
        return x * self.scale


class GatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.gate = Gate(8)
        self.head = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.head(self.gate(self.conv(x))).mean((2, 3)))


def gated() -> nn.Module:
    return GatedNet()


def failing() -> nn.Module:
    raise RuntimeError("no GPU here")


def not_a_module():
    return [1, 2, 3]
