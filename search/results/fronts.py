"""Pareto fronts of accuracy against measured latency, one per device, read from a run's store."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hilas.devices.latency import Latency
from hilas.search.store import ScoredRow, Store, open_run

ACCURACY_SOURCES = ("proxy", "recovered")


@dataclass(frozen=True)
class Point:
    """One evaluated candidate on one device."""

    candidate: int
    model_key: str
    structure_key: str
    accuracy: float
    latency: Latency
    params: int
    flops: int
    kept: str | None = None  # after recovery: the weights it kept ("recovered", or "before" where recovery lost)

    def to_json(self) -> dict:
        lat = self.latency
        return {"candidate": self.candidate, "accuracy": self.accuracy,
                **({"kept": self.kept} if self.kept else {}),
                "latency_ms": {"median": lat.median_ms, "p90": lat.p90_ms, "p99": lat.p99_ms, "n": lat.n,
                               "cv": lat.cv, "rounds_cv": lat.rounds_cv, "round_medians": list(lat.round_medians_ms),
                               "drift": lat.drift, "runtime": lat.runtime},
                "params": self.params, "flops": self.flops, "structure_key": self.structure_key}


@dataclass(frozen=True)
class Front:
    """The non-dominated candidates of a run on one device, fastest first."""

    run: str
    device: str
    baseline: Point | None
    points: list[Point]
    evaluated: list[Point]
    accuracy_source: str = "proxy"  # the points' accuracy: "proxy" (the search's) or "recovered" (after recovery)

    @property
    def hypervolume(self) -> float:
        return hypervolume(self.points, self.baseline.latency.median_ms if self.baseline else None)

    def to_json(self) -> dict:
        return {"run": self.run, "device": self.device, "accuracy_source": self.accuracy_source,
                "baseline": self.baseline.to_json() if self.baseline else None,
                "front": [p.to_json() for p in self.points], "hypervolume": self.hypervolume}


def dominates(a: Point, b: Point) -> bool:
    """a is at least as accurate and as fast as b, and strictly better in one of the two."""
    at_least = a.accuracy >= b.accuracy and a.latency.median_ms <= b.latency.median_ms
    return at_least and (a.accuracy > b.accuracy or a.latency.median_ms < b.latency.median_ms)


def non_dominated(points: list[Point], cost: Callable[[Point], float] = lambda p: p.latency.median_ms) -> list[Point]:
    """The Pareto set in (accuracy, cost), cheapest first; of equal (accuracy, cost) points the first id is kept.
    The cost is the median latency unless given (a FLOPs-steered search's front is in FLOPs)."""
    ordered = sorted(points, key=lambda p: (cost(p), -p.accuracy, p.candidate))
    front: list[Point] = []
    for p in ordered:
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def hypervolume(points: list[Point], reference_ms: float | None) -> float:
    """Area dominated in (error, latency / reference) up to the point (1, 1).

    The reference latency is the unpruned model's, so 1.0 would mean a model with no error at zero
    latency; points slower than the reference add nothing.
    """
    return area_dominated([(p.accuracy, p.latency.median_ms) for p in points], reference_ms)


def area_dominated(pairs: list[tuple[float, float]], reference_ms: float | None) -> float:
    """`hypervolume` of plain (accuracy, latency ms) pairs, for fronts that are not a run's (benchmarks)."""
    if not reference_ms:
        return 0.0
    area, prev_error = 0.0, 1.0
    for accuracy, ms in sorted(pairs, key=lambda pair: (pair[1], -pair[0])):
        x, error = ms / reference_ms, 1.0 - accuracy
        if x >= 1.0 or error >= prev_error:
            continue
        area += (1.0 - x) * (prev_error - error)
        prev_error = error
    return area


def evaluated_points(store: Store, device: str) -> list[Point]:
    """Every candidate with a successful accuracy and a successful latency on `device` (summaries only:
    the raw samples stay in the store)."""
    return [_point(row) for row in store.scored(device, recovered=False)]


def recovered_points(store: Store, device: str) -> list[Point]:
    """Like evaluated_points, with each candidate's accuracy after recovery (and which weights it kept); empty
    for a run that recovered nothing."""
    return [_point(row) for row in store.scored(device, recovered=True)]


def _point(row: ScoredRow) -> Point:
    return Point(row.candidate, row.model_key, row.structure_key, row.accuracy, Latency.from_record(row.latency, None),
                 row.params, row.flops, row.kept)


def read_fronts(run_dir: Path, accuracy_source: str = "proxy") -> dict[str, Front]:
    """The fronts of a finished or unfinished run directory (see `run_fronts`), one per device."""
    store = open_run(run_dir)
    try:
        return run_fronts(Path(run_dir), store, accuracy_source)
    finally:
        store.close()


def run_fronts(run_dir: Path, store: Store, accuracy_source: str = "proxy") -> dict[str, Front]:
    """One front per device of the run: of the search's proxy accuracies, or (accuracy_source "recovered")
    of the candidates `hilas front recover` recovered, at their accuracy after recovery."""
    if accuracy_source not in ACCURACY_SOURCES:
        raise ValueError(f"accuracy_source must be one of {', '.join(ACCURACY_SOURCES)}, got {accuracy_source!r}")
    baseline_key = store.baseline_key
    out = {}
    for device in store.config["devices"]:
        points = evaluated_points(store, device)
        baseline = next((p for p in points if p.model_key == baseline_key), None)
        if accuracy_source == "recovered":
            points = recovered_points(store, device)
            recovered = next((p for p in points if p.model_key == baseline_key), None)
            baseline = recovered or original(baseline, store, points)
        out[device] = Front(str(run_dir), device, baseline, non_dominated(points), points, accuracy_source)
    return out


def original(baseline: Point | None, store: Store, recovered: list[Point]) -> Point | None:
    """The baseline of a front after recovery that did not recover the unpruned model: the original model at its
    own top-1 (what recovering it would give), so hypervolume and speed-ups have their reference; it is not
    counted among the recovered points. None before anything was recovered."""
    reference = store.reference_accuracy
    if baseline is None or not recovered or reference is None:
        return None
    return dataclasses.replace(baseline, accuracy=reference, kept="recovered")
