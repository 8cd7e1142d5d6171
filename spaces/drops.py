"""Block drops: one bit per residual block whose input and output shapes match."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

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
    """Residual blocks that can become identities.

    A block is a module of its own class (BasicBlock, Bottleneck, InvertedResidual...) held in a
    Sequential or ModuleList, containing a convolution, whose output has its input's shape.
    """
    shapes = _shapes(model, example_input)
    blocks = []
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, _CONTAINERS):
            continue
        for child_name, child in parent.named_children():
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if (not isinstance(child, _CONTAINERS) and list(child.children())
                    and any(isinstance(m, nn.Conv2d) for m in child.modules())
                    and name in shapes and shapes[name][0] == shapes[name][1]):
                blocks.append(name)
    return blocks


class BlockDropSpace(PartSpace):
    """Bit i is 1 when block i is dropped (replaced by an identity)."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, blocks: Iterable[str] | None = None,
                 drop_probability: float = 0.15):
        self.base_model = model.eval()
        self.example_input = example_input
        found = find_blocks(model, example_input)
        if blocks is None:
            self.blocks = found
        else:
            self.blocks = list(blocks)
            for name in self.blocks:
                if name not in found:
                    raise ValueError(f"block '{name}' cannot be dropped: it is not a shape-preserving "
                                     f"block of the model (droppable blocks: {', '.join(found) or 'none'})")
        self.n_var = len(self.blocks)
        self.drop_probability = drop_probability

    def removed(self, genes: np.ndarray) -> frozenset[str]:
        return frozenset(b for b, bit in zip(self.blocks, genes) if bit)

    def repair(self, genes: np.ndarray) -> np.ndarray:
        return (np.asarray(genes) > 0).astype(np.int64)

    def baseline(self) -> np.ndarray:
        return np.zeros(self.n_var, dtype=np.int64)

    def seeds(self) -> list[np.ndarray]:
        """Each block dropped on its own."""
        return [np.eye(self.n_var, dtype=np.int64)[i] for i in range(self.n_var)]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return (rng.random(self.n_var) < self.drop_probability).astype(np.int64)

    def structure(self, genes: np.ndarray, removed: frozenset[str]) -> tuple[dict[str, int], str]:
        return {}, "drop=" + (",".join(b for b, bit in zip(self.blocks, genes) if bit) or "-")

    def identity(self, genes: np.ndarray, removed: frozenset[str]) -> bytes:
        return np.packbits(np.asarray(genes, dtype=np.uint8)).tobytes()

    def apply(self, model: nn.Module, genes: np.ndarray) -> None:
        for name, bit in zip(self.blocks, genes):
            if bit:
                parent_name, _, child = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                if isinstance(parent, nn.ModuleList):
                    parent[int(child)] = nn.Identity()
                else:
                    setattr(parent, child, nn.Identity())
