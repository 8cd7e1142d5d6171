"""Block drops: one bit per residual block; a dropped block becomes an identity or a 1x1 convolution."""

from __future__ import annotations

import copy
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .adapters import DropAdapters, block_stride, fold_adapters, projection_for, replace_module
from .space import PartSpace, forward_with_hooks

_CONTAINERS = (nn.Sequential, nn.ModuleList)


def _shapes(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[tuple, tuple]]:
    """Input and output shape of every module that takes and returns one tensor."""
    seen: dict[str, tuple[tuple, tuple]] = {}

    def record(name, module, args, out):
        if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            seen[name] = (tuple(args[0].shape), tuple(out.shape))

    forward_with_hooks(model, example_input, list(model.named_modules()), record)
    return seen


def find_blocks(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Residual blocks that can be dropped.

    A block is a module of its own class (BasicBlock, Bottleneck, InvertedResidual...) held in a
    Sequential or ModuleList, containing a convolution, that takes and returns one image tensor. A
    block whose output has its input's shape becomes an identity; one whose shape changes must hold at
    least two convolutions (a lone conv layer is not a block) and change the size by a whole stride,
    and becomes a 1x1 convolution with that stride (see `adapters`).
    """
    shapes = _shapes(model, example_input)
    blocks = []
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, _CONTAINERS):
            continue
        for child_name, child in parent.named_children():
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            convs = sum(isinstance(m, nn.Conv2d) for m in child.modules())
            if isinstance(child, _CONTAINERS) or not list(child.children()) or not convs or name not in shapes:
                continue
            before, after = shapes[name]
            if before == after or (convs >= 2 and block_stride(before, after) is not None):
                blocks.append(name)
    return blocks


class BlockDropSpace(PartSpace):
    """Bit i is 1 when block i is dropped: replaced by an identity, or by a 1x1 convolution where the
    block changes the shape.

    `adapters` (from PRACTISE-style recovery, one per block) are folded into the neighbouring convs of
    every dropped block and give shape-changing blocks their trained replacement; without them a drop is
    plain. `ranking` orders blocks from the most to the least worth dropping (recovered error per
    millisecond saved); it adds seeds that drop its first 2, 3... blocks together.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, blocks: Iterable[str] | None = None,
                 drop_probability: float = 0.15, adapters: dict[str, DropAdapters] | None = None,
                 ranking: Sequence[str] = ()):
        self.base_model = model.eval()
        self.example_input = example_input
        found = find_blocks(model, example_input)
        if blocks is None:
            self.blocks = found
        else:
            self.blocks = list(blocks)
            for name in self.blocks:
                if name not in found:
                    raise ValueError(f"block '{name}' cannot be dropped: it is not a residual block of the "
                                     f"model (droppable blocks: {', '.join(found) or 'none'})")
        shapes = _shapes(model, example_input)
        self.shape_changing = {b for b in self.blocks if shapes[b][0] != shapes[b][1]}
        self.projections = {b: projection_for(model.get_submodule(b), *shapes[b]) for b in self.shape_changing}
        self.adapters = dict(adapters or {})
        unknown = [b for b in [*self.adapters, *ranking] if b not in self.blocks]
        if unknown:
            raise ValueError(f"adapters or ranking name '{unknown[0]}', which is not a droppable block")
        self.ranking = list(ranking)
        self.n_var = len(self.blocks)
        self.drop_probability = drop_probability

    def with_adapters(self, adapters: dict[str, DropAdapters], ranking: Sequence[str]) -> BlockDropSpace:
        """This space with trained adapters and a ranking of its blocks (the blocks and their shapes are kept,
        not traced again)."""
        unknown = [b for b in [*adapters, *ranking] if b not in self.blocks]
        if unknown:
            raise ValueError(f"adapters or ranking name '{unknown[0]}', which is not a droppable block")
        changed = copy.copy(self)
        changed.adapters, changed.ranking = dict(adapters), list(ranking)
        changed._composed = None
        return changed

    def replacement(self, block: str) -> nn.Module:
        """What a dropped block becomes, before any adapter is folded in."""
        if block not in self.shape_changing:
            return nn.Identity()
        conv = copy.deepcopy(self.projections[block])
        projection = self.adapters.get(block, DropAdapters(block)).projection
        if projection is not None:
            conv.load_state_dict(projection)
        return conv

    def removed(self, genes: np.ndarray) -> frozenset[str]:
        return frozenset(b for b, bit in zip(self.blocks, genes) if bit)

    def repair(self, genes: np.ndarray) -> np.ndarray:
        return (np.asarray(genes) > 0).astype(np.int64)

    def baseline(self) -> np.ndarray:
        return np.zeros(self.n_var, dtype=np.int64)

    def seeds(self) -> list[np.ndarray]:
        """Each block dropped on its own, then the ranking's first 2, 3... blocks (up to half of them)."""
        singles = [np.eye(self.n_var, dtype=np.int64)[i] for i in range(self.n_var)]
        prefixes = []
        for k in range(2, (len(self.ranking) + 1) // 2 + 1):
            genes = self.baseline()
            genes[[self.blocks.index(b) for b in self.ranking[:k]]] = 1
            prefixes.append(genes)
        return singles + prefixes

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return (rng.random(self.n_var) < self.drop_probability).astype(np.int64)

    def structure(self, genes: np.ndarray, removed: frozenset[str]) -> tuple[dict[str, int], str]:
        return {}, "drop=" + (",".join(b for b, bit in zip(self.blocks, genes) if bit) or "-")

    def identity(self, genes: np.ndarray, removed: frozenset[str]) -> bytes:
        return np.packbits(np.asarray(genes, dtype=np.uint8)).tobytes()

    def apply(self, model: nn.Module, genes: np.ndarray) -> None:
        dropped = [b for b, bit in zip(self.blocks, genes) if bit]
        for name in dropped:
            replace_module(model, name, self.replacement(name))
        for name in dropped:
            if name in self.adapters:
                fold_adapters(model, self.adapters[name])
