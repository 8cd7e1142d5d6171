"""The CNNs the fidelity benchmark times, built from a small spec.

The residual nets are the embedded default's architecture, `evaluators.default.DigitsResNet`, at
other widths. Importing it brings only torch and numpy (scikit-learn is loaded inside functions),
so the independent GPU harness can rebuild exactly the model hilas measured on a machine without
Ray or scikit-learn; it shares the model's definition with hilas, never its timing code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from hilas.evaluators.default import DigitsResNet

SEED = 0
N_CLASSES = 10


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: a family ("resnet", "convstack" or "vgg"), its width and input size."""

    family: str
    width: int
    size: int
    depth: int = 0  # convstack only: how many 3x3 convolutions

    @property
    def name(self) -> str:
        depth = f"-d{self.depth}" if self.family == "convstack" else ""
        return f"{self.family}-w{self.width}{depth}-{self.size}px"

    @property
    def in_channels(self) -> int:
        return 1 if self.family == "resnet" else 3

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.in_channels, self.size, self.size)

    def to_dict(self) -> dict:
        return asdict(self)


# Roughly log-spaced in latency: on one core of an AMD EPYC (onnxruntime 1.32) from 0.011 ms to 20 ms.
MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("convstack", 16, 8, depth=2),
    ModelSpec("resnet", 8, 8),
    ModelSpec("resnet", 24, 8),
    ModelSpec("convstack", 32, 16, depth=4),
    ModelSpec("resnet", 48, 8),  # the embedded default's structure
    ModelSpec("convstack", 32, 32, depth=4),
    ModelSpec("resnet", 48, 16),
    ModelSpec("vgg", 48, 32),
    ModelSpec("resnet", 48, 32),
    ModelSpec("vgg", 48, 64),
    ModelSpec("resnet", 96, 32),
    ModelSpec("resnet", 64, 64),
)

# --quick: four models across the range, none slow enough to stretch a short protocol.
QUICK_MODELS: tuple[ModelSpec, ...] = (MODELS[1], MODELS[4], MODELS[5], MODELS[8])


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def conv_stack(width: int, depth: int, in_channels: int) -> nn.Sequential:
    """`depth` 3x3 convolutions at one width and resolution, then pooling and a classifier."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += conv_bn_relu(in_channels if i == 0 else width, width)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, N_CLASSES))


def vgg(width: int, in_channels: int) -> nn.Sequential:
    """Three VGG stages (two 3x3 convolutions, then 2x2 max-pooling) at width, 2x and 4x."""
    layers: list[nn.Module] = []
    cin = in_channels
    for cout in (width, 2 * width, 4 * width):
        layers += conv_bn_relu(cin, cout) + conv_bn_relu(cout, cout) + [nn.MaxPool2d(2)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, N_CLASSES))


def build(spec: ModelSpec) -> nn.Module:
    """The model of `spec` in eval mode, with weights drawn from a fixed seed (same on every host)."""
    torch.manual_seed(SEED)
    if spec.family == "resnet":
        model: nn.Module = DigitsResNet(widths=(spec.width, 2 * spec.width), n_classes=N_CLASSES)
    elif spec.family == "convstack":
        model = conv_stack(spec.width, spec.depth, spec.in_channels)
    elif spec.family == "vgg":
        model = vgg(spec.width, spec.in_channels)
    else:
        raise ValueError(f"unknown model family {spec.family!r}; known: resnet, convstack, vgg")
    return model.eval()


def example_input(spec: ModelSpec) -> torch.Tensor:
    """A fixed-seed input of the model's shape (latency does not depend on its values)."""
    generator = torch.Generator().manual_seed(SEED)
    return torch.randn(spec.input_shape, generator=generator)
