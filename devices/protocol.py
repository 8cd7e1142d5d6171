"""The one place where the rules of a measurement live.

Every agent that can run a model in a loop times it through `measure_callable`,
so all devices are measured the same way and a stricter protocol (repeated
rounds, drift checks) is a change here only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Callable

from .latency import Latency, summarize


@dataclass(frozen=True)
class MeasurementProtocol:
    """How long to warm up and how many timed runs make a measurement.

    Warm-up and timed runs each stop only when both their count and their
    duration are reached (short models get many runs, slow ones a minimum
    time); timed runs are capped by max_samples and max_seconds.
    """

    warmup_runs: int = 10
    warmup_seconds: float = 0.2
    min_samples: int = 50
    min_seconds: float = 0.5
    max_samples: int = 5000
    max_seconds: float = 5.0

    def __post_init__(self) -> None:
        for name in ("warmup_runs", "warmup_seconds", "min_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"MeasurementProtocol.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_samples", "max_samples", "max_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"MeasurementProtocol.{name} must be > 0, got {getattr(self, name)}")
        if self.min_samples > self.max_samples:
            raise ValueError(
                f"MeasurementProtocol.min_samples ({self.min_samples}) exceeds max_samples ({self.max_samples})"
            )
        if self.min_seconds > self.max_seconds:
            raise ValueError(
                f"MeasurementProtocol.min_seconds ({self.min_seconds}) exceeds max_seconds ({self.max_seconds})"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MeasurementProtocol:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown measurement protocol settings {unknown}; known: {sorted(known)}")
        return cls(**d)


def measure_callable(run_once: Callable[[], None], protocol: MeasurementProtocol, runtime: str) -> Latency:
    """Warm up, then time `run_once` repeatedly; each sample is one call."""
    warmup_runs = _warm_up(run_once, protocol)
    return summarize(_timed_runs(run_once, protocol), warmup_runs=warmup_runs, runtime=runtime)


def _warm_up(run_once: Callable[[], None], protocol: MeasurementProtocol) -> int:
    """Untimed runs so caches, allocators and clocks settle; returns how many ran."""
    budget_ns = protocol.warmup_seconds * 1e9
    start = time.perf_counter_ns()
    runs = 0
    while runs < protocol.warmup_runs or time.perf_counter_ns() - start < budget_ns:
        run_once()
        runs += 1
    return runs


def _timed_runs(run_once: Callable[[], None], protocol: MeasurementProtocol) -> list[float]:
    """Timings in ms until both minimums are met or a cap is hit."""
    min_ns, max_ns = protocol.min_seconds * 1e9, protocol.max_seconds * 1e9
    samples: list[float] = []
    start = time.perf_counter_ns()
    while True:
        t0 = time.perf_counter_ns()
        run_once()
        t1 = time.perf_counter_ns()
        samples.append((t1 - t0) / 1e6)
        elapsed = t1 - start
        if len(samples) >= protocol.max_samples or elapsed >= max_ns:
            return samples
        if len(samples) >= protocol.min_samples and elapsed >= min_ns:
            return samples
