"""What the loop needs of a search algorithm: ask for genomes, be told their objectives (pymoo's ask/tell).

The loop knows only this contract; each algorithm is a module of its own in this package and is named by
`[search] algorithm` in the run config.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hilas.spaces import Space


class Searcher(Protocol):
    """An algorithm in ask/tell form: `ask` returns the next genomes to evaluate (an empty array when it has
    none left), `tell` takes their objectives F (minimised) and constraints G (feasible where <= 0)."""

    def ask(self) -> np.ndarray: ...
    def tell(self, F: np.ndarray, G: np.ndarray) -> None: ...


def make_searcher(algorithm: str, space: Space, n_obj: int, population: int, seed: int) -> Searcher:
    """The run's algorithm over `space`, with `n_obj` objectives (accuracy error first, then costs)."""
    if algorithm == "nsga2":
        from .nsga2 import Nsga2

        return Nsga2(space, n_obj, population, seed)
    if algorithm == "random":
        from .random_search import RandomSearch

        return RandomSearch(space, population, seed)
    raise ValueError(f"unknown search algorithm {algorithm!r}")
