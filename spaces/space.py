"""The `Space` protocol (what the search engine needs) and the composition of parts."""

from __future__ import annotations

import copy
import hashlib
from typing import Protocol, Sequence

import numpy as np
import torch
from torch import nn

from .variant import Variant


class Space(Protocol):
    """A genome encoding of compressed variants of one base model.

    All variables are integers in [lower, upper] (0/1 for the pruning parts).
    """

    n_var: int
    lower: np.ndarray
    upper: np.ndarray

    def repair(self, genome: np.ndarray) -> np.ndarray: ...
    def decode(self, genome: np.ndarray) -> Variant: ...
    def seeds(self) -> list[np.ndarray]: ...
    def sample(self, rng: np.random.Generator) -> np.ndarray: ...
    def baseline(self) -> np.ndarray: ...


class Part(Protocol):
    """One slice of a composed genome that edits a copy of the base model.

    Parts never see each other's genes; they only learn which modules other parts removed
    (`removed`: names of modules replaced by identities), so that genes acting inside removed
    modules do not count in the structure or the identity of the model.
    """

    n_var: int
    base_model: nn.Module
    example_input: torch.Tensor

    def removed(self, genes: np.ndarray) -> frozenset[str]: ...
    def apply(self, model: nn.Module, genes: np.ndarray) -> None: ...
    def structure(self, genes: np.ndarray, removed: frozenset[str]) -> tuple[dict[str, int], str]: ...
    def identity(self, genes: np.ndarray, removed: frozenset[str]) -> bytes: ...
    def repair(self, genes: np.ndarray) -> np.ndarray: ...
    def seeds(self) -> list[np.ndarray]: ...
    def sample(self, rng: np.random.Generator) -> np.ndarray: ...
    def baseline(self) -> np.ndarray: ...


def forward_with_hooks(model: nn.Module, example_input: torch.Tensor,
                       modules: Sequence[tuple[str, nn.Module]], hook) -> None:
    """One eval-mode forward pass with `hook(name, module, args, output)` on each given module."""
    handles = [m.register_forward_hook(lambda mod, args, out, name=name: hook(name, mod, args, out))
               for name, m in modules]
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        for h in handles:
            h.remove()


def inside(name: str, removed: frozenset[str]) -> bool:
    """Whether module `name` is one of, or lies within, the removed modules."""
    return any(name == r or name.startswith(r + ".") for r in removed)


def model_signature(model: nn.Module, example_input: torch.Tensor) -> str:
    """A short hash of the base model's structure, so keys of different models never collide."""
    words = [f"input={tuple(example_input.shape)}"]
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()
        words.append(f"{name}:{type(module).__name__}:{shape}")
    text = "|".join(words)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


class ComposedSpace:
    """A genome made of the parts' genes laid end to end (e.g. block drops + filter masks)."""

    def __init__(self, parts: Sequence[Part]):
        if not parts:
            raise ValueError("a space needs at least one part")
        base = parts[0].base_model
        if any(p.base_model is not base for p in parts):
            raise ValueError("all parts of a space must edit the same base model")
        self.parts = list(parts)
        self.base_model = base
        self.example_input = parts[0].example_input
        self.signature = model_signature(base, self.example_input)
        self._bounds = np.cumsum([0] + [p.n_var for p in parts])
        self.n_var = int(self._bounds[-1])
        self.lower = np.zeros(self.n_var, dtype=np.int64)
        self.upper = np.ones(self.n_var, dtype=np.int64)

    def replaced(self, part: Part, by: Part) -> ComposedSpace:
        """The same space with one part swapped for another of the same genes (e.g. drops with their trained
        adapters); the other parts are shared, not rebuilt."""
        if by.n_var != part.n_var:
            raise ValueError(f"a part of {part.n_var} genes cannot be replaced by one of {by.n_var}")
        return ComposedSpace([by if p is part else p for p in self.parts])

    def split(self, genome: np.ndarray) -> list[np.ndarray]:
        genome = np.asarray(genome)
        if genome.shape != (self.n_var,):
            raise ValueError(f"genome has shape {genome.shape}, this space needs ({self.n_var},)")
        return [genome[a:b] for a, b in zip(self._bounds[:-1], self._bounds[1:])]

    def _join(self, slices: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(s, dtype=np.int64) for s in slices])

    def repair(self, genome: np.ndarray) -> np.ndarray:
        return self._join([p.repair(g) for p, g in zip(self.parts, self.split(genome))])

    def baseline(self) -> np.ndarray:
        return self._join([p.baseline() for p in self.parts])

    def seeds(self) -> list[np.ndarray]:
        """The baseline, then each part's seeds with the other parts at their baseline."""
        out = [self.baseline()]
        for i, part in enumerate(self.parts):
            for seed in part.seeds():
                slices = [p.baseline() for p in self.parts]
                slices[i] = seed
                out.append(self._join(slices))
        unique = {g.tobytes(): g for g in out}
        return list(unique.values())

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return self._join([p.sample(rng) for p in self.parts])

    def decode(self, genome: np.ndarray) -> Variant:
        genome = self.repair(genome)
        slices = self.split(genome)
        removed = frozenset().union(*(p.removed(g) for p, g in zip(self.parts, slices)))
        widths: dict[str, int] = {}
        words = [self.signature]
        ident = hashlib.sha256()
        for part, genes in zip(self.parts, slices):
            part_widths, word = part.structure(genes, removed)
            widths.update(part_widths)
            words.append(word)
            ident.update(part.identity(genes, removed))
        structure_key = "/".join(words)
        ident.update(structure_key.encode())

        def build() -> nn.Module:
            model = copy.deepcopy(self.base_model).eval()
            for part, genes in zip(self.parts, slices):
                part.apply(model, genes)
            return model.eval()

        return Variant(genome=genome, structure_key=structure_key, model_key=ident.hexdigest()[:20], widths=widths,
                         dropped=tuple(sorted(removed)), _build=build)


class PartSpace:
    """Mixin that makes a single part usable as a whole `Space` on its own."""

    def _alone(self) -> ComposedSpace:
        if getattr(self, "_composed", None) is None:
            self._composed = ComposedSpace([self])  # type: ignore[list-item]
        return self._composed

    @property
    def lower(self) -> np.ndarray:
        return self._alone().lower

    @property
    def upper(self) -> np.ndarray:
        return self._alone().upper

    def decode(self, genome: np.ndarray) -> Variant:
        return self._alone().decode(genome)
