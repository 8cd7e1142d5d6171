"""pymoo's NSGA-II in ask/tell form over a `Space`: its repair, its mutation, and a first population of seeds."""

from __future__ import annotations

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.operators.crossover.pntx import TwoPointCrossover
from pymoo.operators.mutation.bitflip import BitflipMutation

from hilas.spaces import Space


class SpaceRepair(Repair):
    def __init__(self, space: Space):
        super().__init__()
        self.space = space

    def _do(self, problem, X, **kwargs):
        return np.stack([self.space.repair(x) for x in X]).astype(X.dtype)


class RedrawMutation(Mutation):
    """Integer genes wider than a bit (e.g. a stage's width multiplier): each one, with probability
    prob_var, is drawn again uniformly from its bounds."""

    def _do(self, problem, X, random_state=None, **kwargs):
        redraw = random_state.random(X.shape) < self.get_prob_var(problem, size=(len(X), 1))
        return np.where(redraw, random_state.integers(problem.xl, problem.xu + 1, size=X.shape), X)


def initial_population(space: Space, size: int, seed: int) -> np.ndarray:
    """The space's seeds (unpruned first), then its random samples, without duplicates."""
    rng = np.random.default_rng(seed)
    genomes = {g.tobytes(): g for g in (space.repair(s) for s in space.seeds())}
    tries = 0
    while len(genomes) < size and tries < 100 * size:
        g = space.repair(space.sample(rng))
        genomes.setdefault(g.tobytes(), g)
        tries += 1
    return np.stack(list(genomes.values())[:size])


class Nsga2:
    """pymoo's NSGA-II through ask/tell (pymoo counts no evaluations in that mode: the loop keeps the budget)."""

    def __init__(self, space: Space, n_obj: int, population: int, seed: int):
        problem = Problem(n_var=space.n_var, n_obj=n_obj, n_ieq_constr=1, xl=space.lower, xu=space.upper, vtype=int)
        self.algorithm = NSGA2(
            pop_size=population,
            sampling=initial_population(space, population, seed),
            crossover=TwoPointCrossover(),
            mutation=(BitflipMutation if (space.upper == 1).all() else RedrawMutation)(
                prob=1.0, prob_var=min(0.5, 3.0 / space.n_var)),
            repair=SpaceRepair(space),
            eliminate_duplicates=True,
        )
        self.algorithm.setup(problem, seed=seed, verbose=False)
        self.population: Population | None = None

    def ask(self) -> np.ndarray:
        self.population = population = self.algorithm.ask()
        return population.get("X") if len(population) else np.empty((0, 0))

    def tell(self, F: np.ndarray, G: np.ndarray) -> None:
        if self.population is None:
            raise RuntimeError("tell() before ask()")
        self.population.set("F", F, "G", G)
        self.algorithm.tell(infills=self.population)
