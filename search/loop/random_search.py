"""Random search: the baseline users would otherwise run."""

from __future__ import annotations

import numpy as np

from hilas.spaces import Space


class RandomSearch:
    """The unpruned model, then the space's own random samples (those NSGA-II's first population is drawn
    from), a population at a time, never the same genome twice."""

    def __init__(self, space: Space, population: int, seed: int):
        self.space, self.size = space, population
        self.rng = np.random.default_rng(seed)
        self.seen: set[bytes] = set()
        self.pending = [space.repair(space.baseline())]

    def ask(self) -> np.ndarray:
        genomes: list[np.ndarray] = []
        tries = 0
        while self.pending or (len(genomes) < self.size and tries < 100 * self.size):
            g = self.pending.pop() if self.pending else self.space.repair(self.space.sample(self.rng))
            tries += 1
            if g.tobytes() not in self.seen:
                self.seen.add(g.tobytes())
                genomes.append(g)
        return np.stack(genomes) if genomes else np.empty((0, 0))

    def tell(self, F: np.ndarray, G: np.ndarray) -> None:
        pass
