"""The search loop: pymoo NSGA-II through ask/tell, accuracy on the host and latency on devices at once.

Resume is replay: NSGA-II is deterministic for a given seed and given objective values, so a
resumed run asks the same genomes again and every one already in the store is answered from it.
Nothing finished is evaluated twice and the run ends with the front it would have had.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from hilas.devices import DevicePool, LatencyDatabase, MeasurementError, export_onnx, fingerprint, input_specs
from hilas.search.config import RunConfig
from hilas.search.errors import UserError
from hilas.search.results.fronts import run_fronts
from hilas.search.setup.proxy import feature_layers, proxy_accuracy
from hilas.search.setup.task import SearchTask
from hilas.search.store import Store
from hilas.spaces import Space, Variant, model_stats

from .searcher import make_searcher

# Objective value pymoo sees for a failed candidate. It is also marked infeasible, so it never
# survives selection over a feasible one; it is never written to the store.
_FAILED = 1e9


def genome_text(genome: np.ndarray) -> str:
    return "".join(str(int(v)) for v in genome)


class Search:
    """One run: evaluates what NSGA-II asks for, writing every result to the store as it lands.

    A structure's latency on a device comes, in order of preference, from this run's store, from
    the latency database (unless the run is fresh), or from a measurement; every successful
    measurement is added to the database for later runs.
    """

    def __init__(self, store: Store, task: SearchTask, pool: DevicePool, cfg: RunConfig, infos: dict[str, dict],
                 database: LatencyDatabase | None = None,
                 on_progress: Callable[[str, int, int], None] | None = None):
        """`infos` are the devices' info(); `on_progress(what, done, total)` is told of every candidate
        scored and measurement made."""
        self.store, self.task, self.pool, self.cfg = store, task, pool, cfg
        self.devices = list(cfg.devices)
        self.infos = infos
        self.fingerprints = {d: fingerprint(infos[d]) for d in self.devices}
        self.inputs = input_specs(task.example_input)
        self.database = database
        self.on_progress = on_progress or (lambda what, done, total: None)
        self.in_flight: set[tuple[str, str]] = set()
        self.evaluations = 0
        self.layers = feature_layers(task.model, task.example_input) if cfg.proxy == "distillation" else []
        self.stats: dict[str, int] = {"accuracy_evaluated": 0, "accuracy_reused": 0, "latency_measured": 0,
                                      "latency_failed": 0, "latency_from_database": 0, "latency_in_store": 0,
                                      "drift_repeats": 0}
        self.devices_lost: dict[str, str] = {}

    def run(self, space: Space) -> None:
        """Search `space` until the budget is spent (or the algorithm has nothing left to ask)."""
        costs = 1 if self.cfg.objective == "flops" else len(self.devices)
        searcher = make_searcher(self.cfg.algorithm, space, 1 + costs, self.cfg.population, self.cfg.seed)
        self.store.baseline_key = space.decode(space.baseline()).model_key
        generation = 0
        while self.evaluations < self.cfg.budget:
            X = searcher.ask()
            if not len(X):  # a small space (e.g. binary widths) has no genome left to try
                break
            searcher.tell(*self.evaluate(space, X, generation))
            fronts = run_fronts(self.store.path.parent, self.store)
            self.store.add_generation(generation, self.evaluations,
                                      {d: f.hypervolume for d, f in fronts.items()})
            generation += 1
        self.store.status = "finished"
        self.store.summary = self.summary()

    def structure_costs(self, candidates: list[Variant]) -> dict[str, float]:
        """What the search ranks structures by, per structure (by structure_key): median latency on the run's first
        device, measured now where no store or database has it, or MFLOPs with objective = "flops"."""
        return self._mflops(candidates) if self.cfg.objective == "flops" else self._medians(candidates)

    def summary(self) -> dict:
        """What this session of the run did, with the latency database's hit rate."""
        looked_up = self.stats["latency_from_database"] + self.stats["latency_measured"] + self.stats["latency_failed"]
        hit_rate = self.stats["latency_from_database"] / looked_up if looked_up else 0.0
        return {**self.stats, "devices_lost": self.devices_lost, "database_hit_rate": hit_rate, "fresh": self.cfg.fresh}

    # one generation ----------------------------------------------------------------------------
    def evaluate(self, space: Space, X: np.ndarray, generation: int) -> tuple[np.ndarray, np.ndarray]:
        candidates = [space.decode(np.asarray(x, dtype=np.int64)) for x in X]
        ids = [self.store.add_candidate(c.model_key, c.structure_key, genome_text(c.genome), generation)
               for c in candidates]
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

    def _submit_latencies(self, candidates: list[Variant]) -> None:
        """Export each new structure once and queue it on every device that has no latency for it."""
        for c in {c.structure_key: c for c in candidates}.values():
            missing = [d for d in self.devices
                       if (d, c.structure_key) not in self.in_flight and self.store.latency(d, c.structure_key) is None]
            self.stats["latency_in_store"] += len(self.devices) - len(missing)
            missing = [d for d in missing if not self._reuse_from_database(d, c.structure_key)]
            if not missing and self.store.structure(c.structure_key):
                continue
            model = c.build()
            stats = model_stats(model, self.task.example_input)
            self.store.add_structure(c.structure_key, stats.params, stats.flops, c.widths, list(c.dropped))
            if not missing:
                continue
            try:
                artifact = export_onnx(model, self.task.example_input, c.structure_key)
            except MeasurementError as e:
                for d in missing:
                    self.store.add_latency(d, c.structure_key, None, status=e.failure, message=str(e))
                continue
            for d in missing:
                self.pool.submit(d, artifact)
                self.in_flight.add((d, c.structure_key))

    def _medians(self, candidates: list[Variant]) -> dict[str, float]:
        """Median latency on the run's first device of each candidate's structure (by structure_key), read from
        the store or the latency database, or measured now."""
        self._submit_latencies(candidates)
        while self.in_flight:
            self._collect(timeout=1.0)
        rows = {c.structure_key: self.store.latency(self.devices[0], c.structure_key) for c in candidates}
        return {key: row.latency.median_ms for key, row in rows.items() if row is not None and row.status == "ok"}

    def _mflops(self, candidates: list[Variant]) -> dict[str, float]:
        """MFLOPs of each candidate's structure (by structure_key): the cost a FLOPs-steered search ranks drops by."""
        return {c.structure_key: model_stats(c.build(), self.task.example_input).flops / 1e6 for c in candidates}

    def _reuse_from_database(self, device: str, structure_key: str) -> bool:
        if self.database is None or self.cfg.fresh:
            return False
        latency = self.database.get(self.fingerprints[device], structure_key, self.inputs)
        if latency is None:
            return False
        self.store.add_latency(device, structure_key, latency, fingerprint=self.fingerprints[device], source="database")
        self.stats["latency_from_database"] += 1
        return True

    def _evaluate_accuracy(self, c: Variant) -> None:
        if self.store.accuracy(c.model_key) is not None:
            self.stats["accuracy_reused"] += 1
            return
        start = time.perf_counter()
        try:
            acc = proxy_accuracy(c.build(), self.task, self.cfg, self.layers)
        except Exception as e:  # a candidate that cannot be built or run is a failed candidate, not a crash
            self.store.add_accuracy(c.model_key, None, status="failed", message=f"{type(e).__name__}: {e}")
        else:
            self.store.add_accuracy(c.model_key, acc, seconds=time.perf_counter() - start)
        self.stats["accuracy_evaluated"] += 1

    def _collect(self, timeout: float) -> None:
        for r in self.pool.poll(timeout=timeout):
            fp = self.fingerprints[r.device]
            if r.error is None:
                self.store.add_latency(r.device, r.structure_key, r.latency, fingerprint=fp)
                if self.database is not None:
                    self.database.put(fp, self.infos[r.device], r.structure_key, self.inputs, r.latency)
                self.stats["latency_measured"] += 1
                self.stats["drift_repeats"] += len(r.latency.reference_ms) > 2
            else:
                self.store.add_latency(r.device, r.structure_key, None, status=r.error.failure, message=str(r.error),
                                       fingerprint=fp, evidence=r.error.latency)
                self.stats["latency_failed"] += 1
            self.in_flight.discard((r.device, r.structure_key))
            done = self.stats["latency_measured"] + self.stats["latency_failed"]
            self.on_progress("measurements", done, done + len(self.in_flight))

    def _objectives(self, candidates: list[Variant], ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(error, latency per device), or (error, FLOPs) with objective = "flops", and feasibility.

        A device the pool gave up on stops steering the search: its latency counts as 0 where it
        was not measured, so the search goes on for the other devices; its front keeps what it measured.
        """
        lost = self._lost_devices()
        F = np.full((len(candidates), 1 + (1 if self.cfg.objective == "flops" else len(self.devices))), _FAILED)
        G = np.ones((len(candidates), 1))
        for i, c in enumerate(candidates):
            status, acc, _ = self.store.accuracy(c.model_key)
            if self.cfg.objective == "flops":
                if status == "ok":
                    F[i], G[i] = [1.0 - acc, self.store.structure(c.structure_key)["flops"]], -1.0
                continue
            rows = {d: self.store.latency(d, c.structure_key) for d in self.devices}
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
            self.store.status = "stopped"
            reasons = "; ".join(lost.values())
            raise UserError(f"no device is left to measure on: {reasons}. Finished work is saved: fix the "
                            f"devices, then continue with `hilas search resume {self.store.path.parent}`")
        self.devices_lost = lost
        return lost

