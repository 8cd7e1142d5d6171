"""PRACTISE-style adapters: 1x1 convolutions that recover a dropped block, folded into neighbouring convs.

Wang & Wu, "Practical network acceleration with tiny sets" (CVPR 2023). When a block is dropped, the
residual stream around it is adapted at two kinds of places, both exactly foldable:

- *after* a producer: a conv outside the block, run before it, whose output channels feed the
  block's input stream (the stage's stem or downsampling conv, the last conv of each earlier block).
  The adapter mixes the conv's output channels: P (W x + b) = (P W) x + P b, folded into W and b.
- *before* a consumer: a conv outside the block, run after it, that reads the block's output stream
  (the first conv of each later block of the stage, the next stage's first and shortcut convs). The
  adapter mixes the conv's input channels: W * (P x) = (W P) * x, exact because a 1x1 mix without
  bias maps zero padding to zero and commutes with stride and dilation.

Producers and consumers are found with Torch-Pruning's dependency graph: they are the convs whose
output (resp. input) channels are coupled to the block's input (resp. output) channels. Grouped
convs are left alone (a channel mix would cross their groups). Identity shortcuts stay as they are,
so no layer is added: a shape-preserving drop keeps the structure (and latency) of a plain drop.

A block whose shape changes (stride or channels) is replaced by one 1x1 convolution with that stride
(`projection`), initialised from the block's own 1x1 shortcut where it has one; that convolution is a
real layer of the candidate and is measured as such.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from .space import forward_with_hooks, inside


@dataclass(frozen=True)
class DropAdapters:
    """What recovers one dropped block: channel mixes folded into convs, and a shape-changing block's
    replacement convolution (weight and bias), or None for a shape-preserving block."""

    block: str
    before: dict[str, torch.Tensor] = field(default_factory=dict)  # consumer conv -> (C_in, C_in)
    after: dict[str, torch.Tensor] = field(default_factory=dict)  # producer conv -> (C_out, C_out)
    projection: dict[str, torch.Tensor] | None = None

    def to_state(self) -> dict[str, torch.Tensor]:
        """Flat tensors by name, for torch.save and torch.load(weights_only=True)."""
        state = {f"before/{k}": v for k, v in self.before.items()}
        state.update({f"after/{k}": v for k, v in self.after.items()})
        state.update({f"projection/{k}": v for k, v in (self.projection or {}).items()})
        return state

    @classmethod
    def from_state(cls, block: str, state: dict[str, torch.Tensor]) -> "DropAdapters":
        parts: dict[str, dict[str, torch.Tensor]] = {"before": {}, "after": {}, "projection": {}}
        for key, value in state.items():
            kind, _, name = key.partition("/")
            parts[kind][name] = value
        return cls(block, parts["before"], parts["after"], parts["projection"] or None)


@dataclass(frozen=True)
class AdapterSites:
    """Where a dropped block's adapters go, found on the base model."""

    block: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.ModuleList):
        parent[int(child)] = new
    else:
        setattr(parent, child, new)


def projection_for(block: nn.Module, input_shape: tuple, output_shape: tuple) -> nn.Conv2d:
    """The 1x1 convolution that stands in for a shape-changing block: the block's own 1x1 shortcut
    with its BatchNorm folded in where it has one of the right shape, else a strided channel identity."""
    cin, cout = input_shape[1], output_shape[1]
    stride = block_stride(input_shape, output_shape)
    conv = nn.Conv2d(cin, cout, 1, stride, bias=True)
    with torch.no_grad():
        conv.bias.zero_()
        conv.weight.zero_()
        shortcut = _shortcut(block, cin, cout, stride)
        if shortcut is None:
            n = min(cin, cout)
            conv.weight[:n, :n, 0, 0] = torch.eye(n)
        else:
            sc_conv, sc_norm = shortcut
            weight = sc_conv.weight.detach().clone()
            bias = sc_conv.bias.detach().clone() if sc_conv.bias is not None else torch.zeros(cout)
            if sc_norm is not None:
                scale = (sc_norm.weight if sc_norm.affine else 1) / torch.sqrt(sc_norm.running_var + sc_norm.eps)
                shift = (sc_norm.bias if sc_norm.affine else 0) - sc_norm.running_mean * scale
                weight, bias = weight * scale.view(-1, 1, 1, 1), bias * scale + shift
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
    return conv


def block_stride(input_shape: tuple, output_shape: tuple) -> int | None:
    """The stride s of a 1x1 convolution that maps an NCHW input of this size to this output size, or None."""
    if len(input_shape) != 4 or len(output_shape) != 4 or input_shape[0] != output_shape[0]:
        return None
    (h, w), (oh, ow) = input_shape[2:], output_shape[2:]
    return next((s for s in range(1, max(h, w) + 1) if (h - 1) // s + 1 == oh and (w - 1) // s + 1 == ow), None)


def _shortcut(block: nn.Module, cin: int, cout: int, stride: int) -> tuple[nn.Conv2d, nn.Module | None] | None:
    """The block's 1x1 conv from cin to cout channels with this stride, and the BatchNorm right after it."""
    modules = list(block.modules())
    for i, m in enumerate(modules):
        if (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1 and m.in_channels == cin
                and m.out_channels == cout and m.stride == (stride, stride) and m.padding == (0, 0)):
            after = modules[i + 1] if i + 1 < len(modules) else None
            return m, after if isinstance(after, nn.BatchNorm2d) and after.num_features == cout else None
    return None


def adapter_sites(model: nn.Module, example_input: torch.Tensor, block: str,
                  graph: tp.DependencyGraph | None = None) -> AdapterSites:
    """The producer and consumer convs of a block's streams in `model` (see the module docstring)."""
    graph = graph or tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    names = {m: n for n, m in model.named_modules()}
    order: dict[str, int] = {}  # leaf layer -> when it first ran

    def ran(name, module, args, out) -> None:
        order.setdefault(name, len(order))

    forward_with_hooks(model, example_input, [(n, m) for n, m in model.named_modules() if not list(m.children())],
                       ran)
    convs = [n for n, m in model.get_submodule(block).named_modules(prefix=block)
             if isinstance(m, nn.Conv2d) and n in order]
    if not convs:
        return AdapterSites(block, (), ())
    first = min(convs, key=order.__getitem__)
    last = max(convs, key=order.__getitem__)
    inner = [order[n] for n in order if inside(n, frozenset([block]))]
    start, end = min(inner), max(inner)

    def coupled(conv: str, trigger, handler, keep) -> tuple[str, ...]:
        group = graph.get_pruning_group(model.get_submodule(conv), trigger, idxs=[0])
        found = []
        for dep, _ in group:
            module = dep.target.module
            name = names.get(module)
            if (dep.handler == handler and isinstance(module, nn.Conv2d) and module.groups == 1 and name in order
                    and not inside(name, frozenset([block])) and keep(order[name])):
                found.append(name)
        return tuple(sorted(dict.fromkeys(found), key=order.__getitem__))

    producers = coupled(first, tp.prune_conv_in_channels, tp.prune_conv_out_channels, lambda i: i < start)
    consumers = coupled(last, tp.prune_conv_out_channels, tp.prune_conv_in_channels, lambda i: i > end)
    return AdapterSites(block, producers, consumers)


class AdaptedDrop:
    """A copy of the base model with one block dropped and identity adapters hooked around it, for
    training: `parameters` are all that may change; `adapters()` reads them out as a DropAdapters."""

    def __init__(self, model: nn.Module, sites: AdapterSites, replacement: nn.Module):
        self.model = copy.deepcopy(model).eval()
        self.block = sites.block
        replacement = copy.deepcopy(replacement)
        replace_module(self.model, sites.block, replacement)
        self.before = {n: _identity(self.model.get_submodule(n).in_channels) for n in sites.consumers}
        self.after = {n: _identity(self.model.get_submodule(n).out_channels) for n in sites.producers}
        self.projection = replacement if isinstance(replacement, nn.Conv2d) else None
        for p in self.model.parameters():
            p.requires_grad_(False)
        for name, mix in self.before.items():
            self.model.get_submodule(name).register_forward_pre_hook(
                lambda mod, args, mix=mix: (torch.einsum("ij,bjhw->bihw", mix, args[0]),))
        for name, mix in self.after.items():
            self.model.get_submodule(name).register_forward_hook(
                lambda mod, args, out, mix=mix: torch.einsum("ij,bjhw->bihw", mix, out))

    @property
    def parameters(self) -> list[nn.Parameter]:
        params = [*self.before.values(), *self.after.values()]
        if self.projection is not None:
            params += [self.projection.weight, self.projection.bias]
        for p in params:
            p.requires_grad_(True)
        return params

    def adapters(self) -> DropAdapters:
        projection = None
        if self.projection is not None:
            projection = {"weight": self.projection.weight.detach().clone(),
                          "bias": self.projection.bias.detach().clone()}
        return DropAdapters(self.block, {n: p.detach().clone() for n, p in self.before.items()},
                            {n: p.detach().clone() for n, p in self.after.items()}, projection)


def _identity(channels: int) -> nn.Parameter:
    return nn.Parameter(torch.eye(channels))


def fold_adapters(model: nn.Module, adapters: DropAdapters) -> None:
    """Fold the channel mixes into the convs of `model` that still hold the channels they were trained
    for (a conv that another drop removed, or whose channels differ, is left alone)."""
    present = dict(model.named_modules())
    with torch.no_grad():
        for name, mix in adapters.before.items():
            conv = present.get(name)
            if isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.in_channels == mix.shape[0]:
                conv.weight.copy_(torch.einsum("oikl,ij->ojkl", conv.weight, mix))
        for name, mix in adapters.after.items():
            conv = present.get(name)
            if isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.out_channels == mix.shape[0]:
                conv.weight.copy_(torch.einsum("ij,jokl->iokl", mix, conv.weight))
                if conv.bias is not None:
                    conv.bias.copy_(mix @ conv.bias)
