"""Pareto fronts of accuracy against measured latency, one per device, read from a run's store."""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from hilas.devices import Latency

from .store import Store

ACCURACY_KINDS = ("proxy", "recovered")


@dataclass(frozen=True)
class Point:
    """One evaluated candidate on one device."""

    candidate: int
    key: str
    arch_key: str
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
                "params": self.params, "flops": self.flops, "arch_key": self.arch_key}


@dataclass(frozen=True)
class Front:
    """The non-dominated candidates of a run on one device, fastest first."""

    run: str
    device: str
    baseline: Point | None
    points: list[Point]
    evaluated: list[Point]
    accuracy_kind: str = "proxy"  # the points' accuracy: "proxy" (the search's) or "recovered" (after recovery)

    @property
    def hypervolume(self) -> float:
        return hypervolume(self.points, self.baseline.latency.median_ms if self.baseline else None)

    def to_json(self) -> dict:
        return {"run": self.run, "device": self.device, "accuracy_kind": self.accuracy_kind,
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
    return _points(store, device, "accuracies a ON a.key = c.key AND a.status = 'ok'", "NULL")


def recovered_points(store: Store, device: str) -> list[Point]:
    """Like evaluated_points, with each candidate's accuracy after recovery (and which weights it kept); empty
    for a run that recovered nothing."""
    return _points(store, device, "recovered_accuracies a ON a.key = c.key", "a.kept")


def _points(store: Store, device: str, accuracy_join: str, kept: str) -> list[Point]:
    sql = f"""SELECT c.candidate, c.key, c.arch_key, a.accuracy, l.latency, s.params, s.flops, {kept}
              FROM candidates c JOIN {accuracy_join}
              JOIN latencies l ON l.arch_key = c.arch_key AND l.device = ? AND l.status = 'ok'
              JOIN structures s ON s.arch_key = c.arch_key ORDER BY c.candidate"""
    return [Point(cid, key, arch, acc, Latency.from_record(lat, None), params, flops, kept)
            for cid, key, arch, acc, lat, params, flops, kept in store.db.execute(sql, (device,))]


def run_fronts(run_dir: Path, store: Store, accuracy_kind: str = "proxy") -> dict[str, Front]:
    """One front per device of the run: of the search's proxy accuracies, or (accuracy_kind "recovered")
    of the candidates `hilas front recover` recovered, at their accuracy after recovery."""
    if accuracy_kind not in ACCURACY_KINDS:
        raise ValueError(f"accuracy_kind must be one of {', '.join(ACCURACY_KINDS)}, got {accuracy_kind!r}")
    baseline_key = store.get("baseline_key")
    out = {}
    for device in store.get("config")["devices"]:
        points = evaluated_points(store, device)
        baseline = next((p for p in points if p.key == baseline_key), None)
        if accuracy_kind == "recovered":
            points = recovered_points(store, device)
            baseline = next((p for p in points if p.key == baseline_key), None) or original(baseline, store, points)
        out[device] = Front(str(run_dir), device, baseline, non_dominated(points), points, accuracy_kind)
    return out


def original(baseline: Point | None, store: Store, recovered: list[Point]) -> Point | None:
    """The baseline of a front after recovery that did not recover the unpruned model: the original model at its
    own top-1 (what recovering it would give), so hypervolume and speed-ups have their reference; it is not
    counted among the recovered points. None before anything was recovered."""
    reference = store.get("reference_accuracy")
    if baseline is None or not recovered or reference is None:
        return None
    return dataclasses.replace(baseline, accuracy=reference, kept="recovered")
