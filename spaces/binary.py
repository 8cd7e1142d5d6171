"""Binary widths: a Bi-Real-style binary residual network, and a genome of one width per stage.

The network (Liu et al., "Bi-Real Net", ECCV 2018): a full-precision first convolution, stages of
binary 3x3 convolutions (sign activations, +-1 weights times a per-output-channel scale), each
wrapped by a real-valued shortcut, and a full-precision classifier. Stages after the first halve
the resolution; their first shortcut average-pools and repeats channels (see WidthShortcut).

Every layer is slimmable (Yu et al., "Slimmable Neural Networks", ICLR 2019): set_widths() makes
it use its first channels only, so one set of weights (the supernet, trained once) holds every
width, and a candidate inherits its weights by slicing. Widths are multiples of 32 so that a binary
convolution's input channels pack into whole 32-bit words.

A binary convolution exports to ONNX as one node of the custom domain "ai.hilas" (see
BINARY_CONV_OP); only agents that lower it to real 1-bit kernels can run it.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .space import model_signature
from .variant import ModelStats, Variant

CUSTOM_DOMAIN = "ai.hilas"
BINARY_CONV_OP = "BinaryConv2d"
PACK_BITS = 32  # channels per packed word: every width is a multiple of it
BASE_WIDTH = 32
WIDTH_MULTIPLIERS = (1, 2, 3, 4)
STAGES = 3
BLOCKS_PER_STAGE = 2


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, else -1 (never 0: every value must fit in one bit)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class _ApproxSign(torch.autograd.Function):
    """sign(x) forward; Bi-Real's piecewise-quadratic approximation of its derivative backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)


class _BinaryConv2dOnnx(torch.autograd.Function):
    """Only used while exporting: computes the op (for tracing) and emits it as one custom ONNX node.

    ai.hilas.BinaryConv2d(X, W, scale; strides, pads) = scale[c] * conv2d(sign(X), W) with zero
    padding, where sign(0) = +1, W holds +-1 (float32, OIHW) and scale one float per output channel.
    """

    @staticmethod
    def forward(ctx, x, weight, scale, stride: int, padding: int):
        return F.conv2d(binary_sign(x), weight, stride=stride, padding=padding) * scale.view(1, -1, 1, 1)

    @staticmethod
    def symbolic(g, x, weight, scale, stride: int, padding: int):
        out = g.op(f"{CUSTOM_DOMAIN}::{BINARY_CONV_OP}", x, weight, scale,
                   strides_i=[stride, stride], pads_i=[padding] * 4)
        sizes, kernel = x.type().varyingSizes(), weight.type().sizes()
        if sizes and len(sizes) == 4 and None not in sizes:  # tell ONNX shape inference the output's shape
            n, _, h, w = sizes
            out.setType(x.type().with_sizes([n, kernel[0], (h + 2 * padding - kernel[2]) // stride + 1,
                                             (w + 2 * padding - kernel[3]) // stride + 1]))
        return out


class SlimConv2d(nn.Conv2d):
    """A full-precision convolution that can run on its first `active_in`/`active_out` channels."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.active_in, self.active_out = self.in_channels, self.out_channels

    def active_weight(self) -> torch.Tensor:
        if self.active_out == self.out_channels and self.active_in == self.in_channels:
            return self.weight
        return self.weight[:self.active_out, :self.active_in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.active_weight(), None, self.stride, self.padding)


class BinaryConv2d(SlimConv2d):
    """sign(x) convolved with sign(W), times mean |W| per output channel (XNOR-Net's scale).

    Training passes gradients through both signs (Bi-Real's approximation for activations, the
    identity for weights); the real-valued W is what the optimiser updates.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        if in_channels % PACK_BITS:
            raise ValueError(f"a binary convolution needs input channels in multiples of {PACK_BITS} (they are "
                             f"packed into {PACK_BITS}-bit words), got {in_channels}")
        super().__init__(in_channels, out_channels, 3, stride, 1, bias=False)

    def binary_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The +-1 weights (straight-through to W) and the per-output-channel scale."""
        weight = self.active_weight()
        scale = weight.abs().mean(dim=(1, 2, 3)).detach()
        signs = weight + (binary_sign(weight) - weight).detach()
        return signs, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            # .data: the exporter records the +-1 weights and the scale as constants, not the ops making them
            weight = self.active_weight().data
            return _BinaryConv2dOnnx.apply(x, binary_sign(weight), weight.abs().mean(dim=(1, 2, 3)),
                                           self.stride[0], self.padding[0])
        signs, scale = self.binary_weight()
        out = F.conv2d(_ApproxSign.apply(x), signs, None, self.stride, self.padding)
        return out * scale.view(1, -1, 1, 1)


class SlimBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first `active` channels; its statistics are re-estimated per candidate."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.active = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active == self.num_features:
            return super().forward(x)
        c = self.active
        stats = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        return F.batch_norm(x, self.running_mean[:c] if not stats else None,
                            self.running_var[:c] if not stats else None, self.weight[:c], self.bias[:c],
                            stats, momentum, self.eps)


class SlimLinear(nn.Linear):
    """A classifier that reads the first `active_in` features."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.active_in = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.active_in == self.in_features else self.weight[:, :self.active_in]
        return F.linear(x, weight, self.bias)


class WidthShortcut(nn.Module):
    """A real-valued shortcut without weights that halves the resolution and changes the width: 2x2
    average pooling, then the input's channels repeated (or cut) to the output's width.

    Bi-Real downsamples the shortcut with a full-precision 1x1 convolution. It is left out here because
    it would dominate what is measured: on the host through TVM, those float convolutions took 2-3x
    the time of all the binary ones, so latency would follow them and not the 1-bit work the widths buy.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.active_in, self.active_out = cin, cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        repeats = -(-self.active_out // self.active_in)
        if repeats > 1:
            x = x.repeat(1, repeats, 1, 1)
        return x if repeats * self.active_in == self.active_out else x[:, :self.active_out]


class BinaryBlock(nn.Module):
    """Bi-Real's unit: BN(binary conv(x)) + shortcut(x); the shortcut stays real-valued."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = BinaryConv2d(cin, cout, stride)
        self.bn = SlimBatchNorm2d(cout)
        self.shortcut = WidthShortcut(cin, cout, stride) if stride > 1 or cin != cout else nn.Identity()

    def set_widths(self, cin: int, cout: int) -> None:
        self.conv.active_in, self.conv.active_out, self.bn.active = cin, cout, cout
        if isinstance(self.shortcut, WidthShortcut):
            self.shortcut.active_in, self.shortcut.active_out = cin, cout
        elif cin != cout:
            raise ValueError(f"a block built {self.conv.in_channels} -> {self.conv.out_channels} at stride 1 keeps "
                             f"its width; got {cin} -> {cout}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + self.shortcut(x)


class BiRealNet(nn.Module):
    """Full-precision stem, `len(widths)` stages of binary blocks (the first at full resolution,
    each next one at half), average pooling and a full-precision classifier.

    The stages are named stage1, stage2... as in the embedded DigitsResNet, so distillation that
    matches a teacher's stage outputs by name (evaluators.distillation) finds them.
    """

    def __init__(self, widths: Sequence[int], blocks_per_stage: int = BLOCKS_PER_STAGE, in_channels: int = 1,
                 n_classes: int = 10) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or any(w <= 0 or w % PACK_BITS for w in widths):
            raise ValueError(f"widths must be positive multiples of {PACK_BITS}, got {widths}")
        self.widths = tuple(widths)
        self.stem = nn.Sequential(SlimConv2d(in_channels, widths[0], 3, 1, 1, bias=False), SlimBatchNorm2d(widths[0]))
        for s, width in enumerate(widths):
            cin = widths[s - 1] if s else widths[0]
            self.add_module(f"stage{s + 1}", nn.Sequential(*(
                BinaryBlock(cin if b == 0 else width, width, 2 if (s and b == 0) else 1)
                for b in range(blocks_per_stage))))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = SlimLinear(widths[-1], n_classes)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"stage{s + 1}") for s in range(len(self.widths))]

    def set_widths(self, widths: Sequence[int]) -> None:
        """Run on the first widths[s] channels of every stage s (at most the built widths)."""
        if len(widths) != len(self.widths) or any(not 0 < w <= m for w, m in zip(widths, self.widths)):
            raise ValueError(f"widths {list(widths)} do not fit this network's {list(self.widths)}")
        self.stem[0].active_out = self.stem[1].active = widths[0]
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage):
                block.set_widths(widths[s - 1] if (s and b == 0) else widths[s], widths[s])
        self.fc.active_in = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(torch.flatten(self.pool(x), 1))

    def model_stats(self, example_input: torch.Tensor) -> ModelStats:
        """Parameters, and operations as Bi-Real counts them: 2 per float multiply-add, 2 / 64 per binary one
        (a 64-bit XNOR-popcount does 64 of them)."""
        macs = {"float": 0, "binary": 0}

        def count(module, args, out):
            per_output = module.active_in * module.kernel_size[0] * module.kernel_size[1] \
                if isinstance(module, SlimConv2d) else module.active_in
            macs["binary" if isinstance(module, BinaryConv2d) else "float"] += out.numel() * per_output

        layers = [m for m in self.modules() if isinstance(m, (SlimConv2d, SlimLinear))]
        handles = [m.register_forward_hook(count) for m in layers]
        try:
            with torch.no_grad():
                self.eval()(example_input)
        finally:
            for handle in handles:
                handle.remove()
        params = sum(p.numel() for p in self.parameters())
        return ModelStats(params=params, flops=2 * macs["float"] + round(2 * macs["binary"] / 64))


def inherit(supernet: BiRealNet, widths: Sequence[int]) -> BiRealNet:
    """A network of `widths` holding the supernet's first channels of every layer (BN statistics
    included; they should be re-estimated for the new widths)."""
    net = BiRealNet(widths, blocks_per_stage=len(supernet.stages[0]), in_channels=supernet.stem[0].in_channels,
                    n_classes=supernet.fc.out_features)
    source = supernet.state_dict()
    net.load_state_dict({name: source[name][tuple(slice(0, n) for n in target.shape)].clone()
                         for name, target in net.state_dict().items()})
    return net.eval()


class BinaryWidthSpace:
    """One integer gene per stage: an index into `multipliers`; the stage is `base_width` times it wide.

    Every candidate inherits its weights from `supernet` (whose widths are the largest), so two
    genomes with the same widths are the same model: the key is the structure.
    """

    def __init__(self, supernet: BiRealNet, example_input: torch.Tensor, base_width: int = BASE_WIDTH,
                 multipliers: Sequence[int] = WIDTH_MULTIPLIERS) -> None:
        widths = [base_width * m for m in multipliers]
        if any(w % PACK_BITS for w in widths):
            raise ValueError(f"base_width {base_width} times multipliers {list(multipliers)} gives widths {widths}; "
                             f"each must be a multiple of {PACK_BITS}")
        if list(multipliers) != sorted(set(multipliers)):
            raise ValueError(f"multipliers must be distinct and increasing, got {list(multipliers)}")
        if any(w != max(widths) for w in supernet.widths):
            raise ValueError(f"the supernet must be {max(widths)} wide in every stage (the largest width), "
                             f"got {list(supernet.widths)}")
        self.supernet = supernet.eval()
        self.base_model = self.supernet
        self.example_input = example_input
        self.base_width = base_width
        self.multipliers = tuple(multipliers)
        self.n_var = len(supernet.widths)
        self.lower = np.zeros(self.n_var, dtype=np.int64)
        self.upper = np.full(self.n_var, len(self.multipliers) - 1, dtype=np.int64)
        self.signature = model_signature(supernet, example_input)

    def widths(self, genome: np.ndarray) -> tuple[int, ...]:
        return tuple(self.base_width * self.multipliers[int(g)] for g in self.repair(genome))

    def repair(self, genome: np.ndarray) -> np.ndarray:
        genome = np.asarray(genome)
        if genome.shape != (self.n_var,):
            raise ValueError(f"genome has shape {genome.shape}, this space needs ({self.n_var},)")
        return np.clip(np.rint(genome), self.lower, self.upper).astype(np.int64)

    def baseline(self) -> np.ndarray:
        """The widest network: the supernet itself."""
        return self.upper.copy()

    def seeds(self) -> list[np.ndarray]:
        """Every stage at the same multiplier, widest first."""
        return [np.full(self.n_var, i, dtype=np.int64) for i in reversed(range(len(self.multipliers)))]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.lower, self.upper + 1)

    def decode(self, genome: np.ndarray) -> Variant:
        genome = self.repair(genome)
        widths = self.widths(genome)
        structure_key = f"{self.signature}/binary-w=" + ".".join(map(str, widths))
        key = hashlib.sha256(structure_key.encode()).hexdigest()[:20]
        return Variant(genome=genome, structure_key=structure_key, model_key=key,
                         widths={f"stage{s + 1}": w for s, w in enumerate(widths)}, dropped=(),
                         _build=lambda: inherit(self.supernet, widths))
