"""Filter masks: one bit per output filter of every prunable channel group.

Groups come from Torch-Pruning's dependency graph, so channels coupled by residual additions
(a stage's stem conv and every block's last conv) share one set of bits and are removed together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from .space import PartSpace, forward_with_hooks, inside

_OUT_HANDLERS = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
# The seeds span mild to aggressive pruning (what uniform pruning's users sweep), so that even a small
# budget's first population reaches the fast end of the front.
DEFAULT_SEED_RATIOS = (0.2, 0.35, 0.5, 0.65, 0.8)
# Seeds keep a multiple of this many channels in groups of at least twice as many: the counts whose
# convolutions vector units run at full width (Torch-Pruning's round_to), so the seeds are fast structures.
SEED_CHANNEL_MULTIPLE = 8


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels that must be pruned together.

    `name` is the first conv of the group (its handle); `members` are all modules whose output
    channels belong to the group; `importance` is each channel's L1 weight norm summed over members.
    """

    name: str
    members: tuple[str, ...]
    size: int
    importance: np.ndarray


def output_layer(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """The last leaf module run in a forward pass: the classifier, whose outputs are never pruned."""
    order: list[nn.Module] = []
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    forward_with_hooks(model, example_input, leaves, lambda name, mod, args, out: order.append(mod))
    if not order:
        raise ValueError("the model ran no layer on the example input; nothing to prune")
    return order[-1]


def find_groups(model: nn.Module, example_input: torch.Tensor) -> list[ChannelGroup]:
    """The prunable conv channel groups of `model`, in a stable order."""
    names = {m: n for n, m in model.named_modules()}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    groups = []
    for group in graph.get_all_groups(ignored_layers=[output_layer(model, example_input)],
                                      root_module_types=[nn.Conv2d]):
        members = [names[dep.target.module] for dep, _ in group
                   if dep.handler in _OUT_HANDLERS and dep.target.module in names]
        members = list(dict.fromkeys(members))
        size = len(group[0].idxs)
        importance = np.zeros(size)
        for name in members:
            weight = model.get_submodule(name).weight.detach()
            if weight.shape[0] == size:
                importance += weight.abs().reshape(size, -1).sum(1).double().numpy()
        groups.append(ChannelGroup(members[0], tuple(members), size, importance))
    groups.sort(key=lambda g: list(names.values()).index(g.name))
    if not groups:
        raise ValueError("found no prunable convolution in the model")
    return groups


class FilterMaskSpace(PartSpace):
    """Bit i of a group's slice is 1 when filter i is kept. At least one filter per group is kept."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor,
                 seed_ratios: tuple[float, ...] = DEFAULT_SEED_RATIOS):
        self.base_model = model.eval()
        self.example_input = example_input
        self.groups = find_groups(model, example_input)
        self.seed_ratios = seed_ratios
        self._offsets = np.cumsum([0] + [g.size for g in self.groups])
        self.n_var = int(self._offsets[-1])

    def slices(self, genes: np.ndarray) -> list[np.ndarray]:
        return [genes[a:b] for a, b in zip(self._offsets[:-1], self._offsets[1:])]

    def _live(self, removed: frozenset[str]) -> list[bool]:
        """Groups that still exist: some member lies outside the removed modules."""
        return [not all(inside(m, removed) for m in g.members) for g in self.groups]

    def removed(self, genes: np.ndarray) -> frozenset[str]:
        return frozenset()

    def repair(self, genes: np.ndarray) -> np.ndarray:
        genes = (np.asarray(genes) > 0).astype(np.int64)
        for group, bits in zip(self.groups, self.slices(genes)):
            if not bits.any():
                bits[int(np.argmax(group.importance))] = 1
        return genes

    def baseline(self) -> np.ndarray:
        return np.ones(self.n_var, dtype=np.int64)

    def _top(self, scores_per_group: list[np.ndarray], keep_fractions: list[float]) -> np.ndarray:
        genes = np.zeros(self.n_var, dtype=np.int64)
        for bits, scores, frac in zip(self.slices(genes), scores_per_group, keep_fractions):
            keep = max(1, int(round(frac * len(scores))))
            bits[np.argsort(-scores, kind="stable")[:keep]] = 1
        return genes

    def seeds(self) -> list[np.ndarray]:
        """L1-norm masks: the same pruning ratio in every group (kept counts rounded to SEED_CHANNEL_MULTIPLE),
        lowest-norm filters removed."""
        scores = [g.importance for g in self.groups]
        return [self._top(scores, [_rounded(1.0 - r, g.size) for g in self.groups]) for r in self.seed_ratios]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A random kept fraction per group, filters chosen by L1 norm perturbed with noise.

        Uniform random bits would keep half of the filters at random, which destroys almost any
        trained network; starting near the importance ranking keeps the population useful.
        """
        scores = [g.importance * rng.lognormal(0.0, 0.5, g.size) for g in self.groups]
        return self._top(scores, list(rng.uniform(0.3, 1.0, len(self.groups))))

    def structure(self, genes: np.ndarray, removed: frozenset[str]) -> tuple[dict[str, int], str]:
        widths = {g.name: int(bits.sum()) if live else 0
                  for g, bits, live in zip(self.groups, self.slices(genes), self._live(removed))}
        return widths, "w=" + ".".join(str(w) if w else "x" for w in widths.values())

    def identity(self, genes: np.ndarray, removed: frozenset[str]) -> bytes:
        live = self._live(removed)
        return b"".join(np.packbits(bits.astype(np.uint8)).tobytes() if ok else b"-"
                        for bits, ok in zip(self.slices(genes), live))

    def apply(self, model: nn.Module, genes: np.ndarray) -> None:
        """Physically remove the unkept filters of every group from `model` (a copy)."""
        plans = [(g, np.flatnonzero(bits == 0)) for g, bits in zip(self.groups, self.slices(genes))]
        plans = [(g, idxs) for g, idxs in plans if len(idxs)]
        if not plans:
            return
        present = dict(model.named_modules())
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=self.example_input)
        for group, idxs in plans:
            handles = [present[m] for m in group.members if m in present]
            if not handles:  # the whole group lies inside blocks another part removed
                continue
            handle = handles[0]
            pruning = graph.get_pruning_group(handle, tp.prune_conv_out_channels, idxs=idxs.tolist())
            pruning.prune()


def _rounded(keep_fraction: float, size: int) -> float:
    """`keep_fraction` of `size` channels, moved to the nearest multiple of SEED_CHANNEL_MULTIPLE where the
    group has room for two of them."""
    if size < 2 * SEED_CHANNEL_MULTIPLE:
        return keep_fraction
    multiple = SEED_CHANNEL_MULTIPLE
    return max(multiple, int(round(keep_fraction * size / multiple)) * multiple) / size
