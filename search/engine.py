"""The search loop: pymoo NSGA-II through ask/tell, accuracy on the host and latency on devices at once.

Resume is replay: NSGA-II is deterministic for a given seed and given objective values, so a
resumed run asks the same genomes again and every one already in the store is answered from it.
Nothing finished is evaluated twice and the run ends with the front it would have had.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import torch
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.operators.crossover.pntx import TwoPointCrossover
from pymoo.operators.mutation.bitflip import BitflipMutation

from hilas.devices import DevicePool, LatencyDatabase, MeasurementError, export_onnx, fingerprint, input_specs
from hilas.spaces import Candidate, ComposedSpace, model_stats

from .config import RunConfig
from .errors import UserError
from .fronts import run_fronts
from .proxy import feature_layers, proxy_accuracy
from .recoverability import recover_drops
from .store import Store
from .task import SearchTask, compose_space

# Objective value pymoo sees for a failed candidate. It is also marked infeasible, so it never
# survives selection over a feasible one; it is never written to the store.
_FAILED = 1e9


class _SpaceRepair(Repair):
    def __init__(self, space: ComposedSpace):
        super().__init__()
        self.space = space

    def _do(self, problem, X, **kwargs):
        return np.stack([self.space.repair(x) for x in X]).astype(X.dtype)


class _RedrawMutation(Mutation):
    """Integer genes wider than a bit (e.g. a stage's width multiplier): each one, with probability
    prob_var, is drawn again uniformly from its bounds."""

    def _do(self, problem, X, random_state=None, **kwargs):
        redraw = random_state.random(X.shape) < self.get_prob_var(problem, size=(len(X), 1))
        return np.where(redraw, random_state.integers(problem.xl, problem.xu + 1, size=X.shape), X)


def initial_population(space: ComposedSpace, size: int, seed: int) -> np.ndarray:
    """The space's seeds (unpruned first), then its random samples, without duplicates."""
    rng = np.random.default_rng(seed)
    genomes = {g.tobytes(): g for g in (space.repair(s) for s in space.seeds())}
    tries = 0
    while len(genomes) < size and tries < 100 * size:
        g = space.repair(space.sample(rng))
        genomes.setdefault(g.tobytes(), g)
        tries += 1
    return np.stack(list(genomes.values())[:size])


class _Nsga2:
    """pymoo's NSGA-II through ask/tell (pymoo counts no evaluations in that mode: the loop keeps the budget)."""

    def __init__(self, space: ComposedSpace, problem: Problem, cfg: RunConfig):
        self.algorithm = NSGA2(
            pop_size=cfg.population,
            sampling=initial_population(space, cfg.population, cfg.seed),
            crossover=TwoPointCrossover(),
            mutation=(BitflipMutation if (space.upper == 1).all() else _RedrawMutation)(
                prob=1.0, prob_var=min(0.5, 3.0 / space.n_var)),
            repair=_SpaceRepair(space),
            eliminate_duplicates=True,
        )
        self.algorithm.setup(problem, seed=cfg.seed, verbose=False)
        self.population = None

    def ask(self) -> np.ndarray:
        self.population = self.algorithm.ask()
        return self.population.get("X") if len(self.population) else np.empty((0, 0))

    def tell(self, F: np.ndarray, G: np.ndarray) -> None:
        self.population.set("F", F, "G", G)
        self.algorithm.tell(infills=self.population)


class _RandomSearch:
    """The baseline users would otherwise run: the unpruned model, then the space's own random samples (those
    NSGA-II's first population is drawn from), a population at a time, never the same genome twice."""

    def __init__(self, space: ComposedSpace, cfg: RunConfig):
        self.space, self.size = space, cfg.population
        self.rng = np.random.default_rng(cfg.seed)
        self.seen: set[bytes] = set()
        self.pending = [space.repair(space.baseline())]

    def ask(self) -> np.ndarray:
        genomes, tries = [], 0
        while self.pending or (len(genomes) < self.size and tries < 100 * self.size):
            g = self.pending.pop() if self.pending else self.space.repair(self.space.sample(self.rng))
            tries += 1
            if g.tobytes() not in self.seen:
                self.seen.add(g.tobytes())
                genomes.append(g)
        return np.stack(genomes) if genomes else np.empty((0, 0))

    def tell(self, F: np.ndarray, G: np.ndarray) -> None:
        pass


def genome_text(genome: np.ndarray) -> str:
    return "".join(str(int(v)) for v in genome)


class Search:
    """One run: evaluates what NSGA-II asks for, writing every result to the store as it lands.

    A structure's latency on a device comes, in order of preference, from this run's store, from
    the latency database (unless the run is fresh), or from a measurement; every successful
    measurement is added to the database for later runs.
    """

    def __init__(self, store: Store, space: ComposedSpace, task: SearchTask, pool: DevicePool, cfg: RunConfig,
                 infos: dict[str, dict], database: LatencyDatabase | None = None,
                 on_progress: Callable[[str, int, int], None] | None = None):
        """`infos` are the devices' info(); `on_progress(what, done, total)` is told of every candidate
        scored and measurement made."""
        self.store, self.space, self.task, self.pool, self.cfg = store, space, task, pool, cfg
        self.devices = list(cfg.devices)
        self.infos = infos
        self.fingerprints = {d: fingerprint(infos[d]) for d in self.devices}
        self.inputs = input_specs(task.example_input)
        self.database = database
        self.on_progress = on_progress or (lambda what, done, total: None)
        self.in_flight: set[tuple[str, str]] = set()
        self.evaluations = 0
        self.layers = feature_layers(task.model, task.example_input) if cfg.proxy == "distillation" else []
        self.stats = {"accuracy_evaluated": 0, "accuracy_reused": 0, "latency_measured": 0, "latency_failed": 0,
                      "latency_from_database": 0, "latency_in_store": 0, "drift_repeats": 0,
                      "devices_lost": {}}

    def run(self) -> None:
        if self.cfg.drops and self.cfg.drop_recovery_steps:
            cost = self._mflops if self.cfg.objective == "flops" else self._medians
            adapters, ranking = recover_drops(self.store, self.space, self.task, self.cfg.drop_recovery_steps,
                                              cost, self.on_progress)
            self.space = compose_space(self.task.model, self.task.example_input, masks=self.cfg.masks, drops=True,
                                       adapters=adapters, ranking=ranking)
        costs = 1 if self.cfg.objective == "flops" else len(self.devices)
        problem = Problem(n_var=self.space.n_var, n_obj=1 + costs, n_ieq_constr=1,
                          xl=self.space.lower, xu=self.space.upper, vtype=int)
        algorithm = _Nsga2(self.space, problem, self.cfg) if self.cfg.algorithm == "nsga2" \
            else _RandomSearch(self.space, self.cfg)
        self.store.set("baseline_key", self.space.decode(self.space.baseline()).key)
        generation = 0
        while self.evaluations < self.cfg.budget:
            X = algorithm.ask()
            if not len(X):  # a small space (e.g. binary widths) has no genome left to try
                break
            algorithm.tell(*self.evaluate(X, generation))
            fronts = run_fronts(self.store.path.parent, self.store)
            self.store.add_generation(generation, self.evaluations,
                                      {d: f.hypervolume for d, f in fronts.items()})
            generation += 1
        self.store.set("status", "finished")
        self.store.set("summary", self.summary())

    def summary(self) -> dict:
        """What this session of the run did, with the latency database's hit rate."""
        looked_up = self.stats["latency_from_database"] + self.stats["latency_measured"] + self.stats["latency_failed"]
        hit_rate = self.stats["latency_from_database"] / looked_up if looked_up else 0.0
        return {**self.stats, "database_hit_rate": hit_rate, "fresh": self.cfg.fresh}

    # one generation ----------------------------------------------------------------------------
    def evaluate(self, X: np.ndarray, generation: int) -> tuple[np.ndarray, np.ndarray]:
        candidates = [self.space.decode(np.asarray(x, dtype=np.int64)) for x in X]
        ids = [self.store.add_candidate(c.key, c.arch_key, genome_text(c.genome), generation) for c in candidates]
        self._submit_latencies(candidates)
        self._collect(timeout=0.0)  # sends the queued work to the devices
        for i, c in enumerate(candidates):
            self._evaluate_accuracy(c)
            self._collect(timeout=0.0)
            self.on_progress("candidates", self.evaluations + i + 1, self.cfg.budget)
        while self.in_flight:
            self._collect(timeout=1.0)
        self.evaluations += len(candidates)
        return self._objectives(candidates, ids)

    def _submit_latencies(self, candidates: list[Candidate]) -> None:
        """Export each new structure once and queue it on every device that has no latency for it."""
        for c in {c.arch_key: c for c in candidates}.values():
            missing = [d for d in self.devices
                       if (d, c.arch_key) not in self.in_flight and self.store.latency(d, c.arch_key) is None]
            self.stats["latency_in_store"] += len(self.devices) - len(missing)
            missing = [d for d in missing if not self._reuse_from_database(d, c.arch_key)]
            if not missing and self.store.structure(c.arch_key):
                continue
            model = c.build()
            stats = model_stats(model, self.task.example_input)
            self.store.add_structure(c.arch_key, stats.params, stats.flops, c.widths, list(c.dropped))
            if not missing:
                continue
            try:
                artifact = export_onnx(model, self.task.example_input, c.arch_key)
            except MeasurementError as e:
                for d in missing:
                    self.store.add_latency(d, c.arch_key, None, status=e.kind, message=str(e))
                continue
            for d in missing:
                self.pool.submit(d, artifact)
                self.in_flight.add((d, c.arch_key))

    def _medians(self, candidates: list[Candidate]) -> dict[str, float]:
        """Median latency on the run's first device of each candidate's structure (by arch_key), read from
        the store or the latency database, or measured now."""
        self._submit_latencies(candidates)
        while self.in_flight:
            self._collect(timeout=1.0)
        rows = {c.arch_key: self.store.latency(self.devices[0], c.arch_key) for c in candidates}
        return {key: row.latency.median_ms for key, row in rows.items() if row is not None and row.status == "ok"}

    def _mflops(self, candidates: list[Candidate]) -> dict[str, float]:
        """MFLOPs of each candidate's structure (by arch_key): the cost a FLOPs-steered search ranks drops by."""
        return {c.arch_key: model_stats(c.build(), self.task.example_input).flops / 1e6 for c in candidates}

    def _reuse_from_database(self, device: str, arch_key: str) -> bool:
        if self.database is None or self.cfg.fresh:
            return False
        latency = self.database.get(self.fingerprints[device], arch_key, self.inputs)
        if latency is None:
            return False
        self.store.add_latency(device, arch_key, latency, fingerprint=self.fingerprints[device], source="database")
        self.stats["latency_from_database"] += 1
        return True

    def _evaluate_accuracy(self, c: Candidate) -> None:
        if self.store.accuracy(c.key) is not None:
            self.stats["accuracy_reused"] += 1
            return
        start = time.perf_counter()
        try:
            acc = proxy_accuracy(c.build(), self.task, self.cfg, self.layers)
        except Exception as e:  # a candidate that cannot be built or run is a failed candidate, not a crash
            self.store.add_accuracy(c.key, None, status="failed", message=f"{type(e).__name__}: {e}")
        else:
            self.store.add_accuracy(c.key, acc, seconds=time.perf_counter() - start)
        self.stats["accuracy_evaluated"] += 1

    def _collect(self, timeout: float) -> None:
        for r in self.pool.poll(timeout=timeout):
            fp = self.fingerprints[r.device]
            if r.error is None:
                self.store.add_latency(r.device, r.arch_key, r.latency, fingerprint=fp)
                if self.database is not None:
                    self.database.put(fp, self.infos[r.device], r.arch_key, self.inputs, r.latency)
                self.stats["latency_measured"] += 1
                self.stats["drift_repeats"] += len(r.latency.reference_ms) > 2
            else:
                self.store.add_latency(r.device, r.arch_key, None, status=r.error.kind, message=str(r.error),
                                       fingerprint=fp, evidence=r.error.latency)
                self.stats["latency_failed"] += 1
            self.in_flight.discard((r.device, r.arch_key))
            done = self.stats["latency_measured"] + self.stats["latency_failed"]
            self.on_progress("measurements", done, done + len(self.in_flight))

    def _objectives(self, candidates: list[Candidate], ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(error, latency per device), or (error, FLOPs) with objective = "flops", and feasibility.

        A device the pool gave up on stops steering the search: its latency counts as 0 where it
        was not measured, so the search goes on for the other devices; its front keeps what it measured.
        """
        lost = self._lost_devices()
        F = np.full((len(candidates), 1 + (1 if self.cfg.objective == "flops" else len(self.devices))), _FAILED)
        G = np.ones((len(candidates), 1))
        for i, c in enumerate(candidates):
            status, acc, _ = self.store.accuracy(c.key)
            if self.cfg.objective == "flops":
                if status == "ok":
                    F[i], G[i] = [1.0 - acc, self.store.structure(c.arch_key)["flops"]], -1.0
                continue
            rows = {d: self.store.latency(d, c.arch_key) for d in self.devices}
            measured = {d: r.latency.median_ms for d, r in rows.items() if r is not None and r.status == "ok"}
            if status != "ok" or any(d not in measured for d in self.devices if d not in lost):
                continue
            F[i] = [1.0 - acc, *(measured.get(d, 0.0) for d in self.devices)]
            G[i] = -1.0
        return F, G

    def _lost_devices(self) -> dict[str, str]:
        """Devices the pool gave up on (and why); stops the run when no device is left."""
        lost = {d: why for d, why in self.pool.broken().items() if d in self.devices}
        if lost and len(lost) == len(self.devices):
            self.store.set("status", "stopped")
            reasons = "; ".join(lost.values())
            raise UserError(f"no device is left to measure on: {reasons}. Finished work is saved: fix the "
                            f"devices, then continue with `hilas search resume {self.store.path.parent}`")
        self.stats["devices_lost"] = lost
        return lost


def keep_host_off(cores: set[int]) -> None:
    """Run the host's accuracy work on the cores no local device agent is pinned to.

    A local CPU agent times models on its own core; host work on that core would show up in its
    measurements as noise.
    """
    if not cores or not hasattr(os, "sched_setaffinity"):
        return
    rest = set(os.sched_getaffinity(0)) - cores
    if rest:
        os.sched_setaffinity(0, rest)
        torch.set_num_threads(len(rest))
