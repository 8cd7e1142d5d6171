"""The one place where the rules of a measurement live.

Every agent times its model through `measure_rounds`, so every device kind is measured the same
way: untimed warm-up bounded by count and time; timed runs until both a minimum count and a
minimum duration are met (capped by a maximum of each); runs shorter than the timer can resolve
timed in batches of inner runs (as TVM's min_repeat_ms does); k independent rounds, each in a
fresh session, with a cooldown between them; the rounds measured again when their medians
disagree, and the noise reported as a failure when they never agree. Drift checks against a
reference model wrap batches of measurements (`devices.drift`).

What differs between devices is only the clock: a `Timer` (host wall clock here, CUDA events in
`devices.cuda`, a simulated clock in `devices.virtual`).

With $HILAS_PROTOCOL_TRACE set to a file, every process that measures appends one JSON line per
phase of a round (open, warmup, timed, cooldown) with its process id and its start and end on
the monotonic clock, which all processes of a machine share: how benchmarks/utilisation.py sees
where a device's time goes. Unset, nothing is written.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from typing import Callable, Iterator, Protocol

from .agent import MeasurementError
from .latency import Latency, summarize

# A sample must span at least this many timer ticks, so rounding to the tick costs under 1 %.
TICKS_PER_SAMPLE = 100
TRACE_ENV = "HILAS_PROTOCOL_TRACE"


@dataclass(frozen=True)
class MeasurementProtocol:
    """How to measure one model. Every field is a setting a user can change, per device.

    Defaults: at least 10 warm-up runs and 1 s; at least 64 timed samples (what MLPerf's
    loadgen needs for a p90) and 1 s; 3 rounds with a 0.25 s cooldown; re-measure (at most
    twice) when the rounds' medians vary by more than 5 % (CV); a drift reference measured
    around every 8 measurements, which are repeated once if the reference moved by more than 5 %.
    """

    warmup_runs: int = 10
    warmup_seconds: float = 1.0
    min_samples: int = 64
    min_seconds: float = 1.0
    max_samples: int = 10_000
    max_seconds: float = 10.0
    rounds: int = 3
    cooldown_seconds: float = 0.25
    noise_threshold: float = 0.05
    max_remeasures: int = 2
    drift_threshold: float = 0.05
    drift_check_every: int = 8

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"MeasurementProtocol.{f.name} must be a finite number, got {value!r}")
            if f.type == "int" and not isinstance(value, int):
                raise ValueError(f"MeasurementProtocol.{f.name} must be a whole number, got {value!r}")
        for name in ("warmup_runs", "warmup_seconds", "min_seconds", "cooldown_seconds", "max_remeasures",
                     "noise_threshold", "drift_threshold"):
            if getattr(self, name) < 0:
                raise ValueError(f"MeasurementProtocol.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_samples", "max_samples", "max_seconds", "rounds", "drift_check_every"):
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

    def updated(self, overrides: dict) -> MeasurementProtocol:
        """This protocol with some settings changed (a device's own settings over the run's)."""
        return MeasurementProtocol.from_dict({**self.to_dict(), **overrides})

    def for_reference(self) -> MeasurementProtocol:
        """The drift reference is measured in one round: it is compared with itself, not with rounds."""
        return replace(self, rounds=1, max_remeasures=0)


class Timer(Protocol):
    """A device's clock. `time` returns the milliseconds `inner` back-to-back runs took, finished."""

    resolution_ms: float

    def time(self, run_once: Callable[[], None], inner: int) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class HostTimer:
    """The host's monotonic clock; right for runtimes whose run returns when the work is done."""

    def __init__(self) -> None:
        self.resolution_ms = host_clock_resolution_ns() / 1e6

    def time(self, run_once: Callable[[], None], inner: int) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(inner):
            run_once()
        return (time.perf_counter_ns() - t0) / 1e6

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@lru_cache(maxsize=1)
def host_clock_resolution_ns() -> int:
    """The smallest step perf_counter_ns shows between two reads (tick or call cost, whichever is larger)."""
    reads = [time.perf_counter_ns() for _ in range(2000)]
    steps = [b - a for a, b in zip(reads, reads[1:]) if b > a]
    return min(steps) if steps else 1000


def measure_rounds(open_run: Callable[[], Callable[[], None]], protocol: MeasurementProtocol, runtime: str,
                   timer: Timer | None = None) -> Latency:
    """Measure a model under `protocol`; `open_run()` opens a fresh session and returns its run-once.

    Raises MeasurementError("noisy") when the rounds' medians disagree by more than the noise
    threshold on every attempt; the error carries the least noisy attempt as evidence.
    """
    timer = timer or HostTimer()
    least_noisy: Latency | None = None
    attempts = 1 + protocol.max_remeasures
    for attempt in range(1, attempts + 1):
        latency = _rounds(open_run, protocol, runtime, timer, attempt)
        if latency.rounds_cv <= protocol.noise_threshold:
            return latency
        if least_noisy is None or latency.rounds_cv < least_noisy.rounds_cv:
            least_noisy = latency
    assert least_noisy is not None  # attempts >= 1: max_remeasures is validated non-negative
    medians = ", ".join(f"{m:.4g}" for m in least_noisy.round_medians_ms)
    raise MeasurementError(
        "noisy",
        f"the {protocol.rounds} rounds disagree: medians {medians} ms vary by {least_noisy.rounds_cv:.1%} "
        f"(threshold {protocol.noise_threshold:.1%}) in each of {attempts} attempts; the device is busy or "
        f"unstable: quieten it, or raise noise_threshold or max_remeasures",
        latency=least_noisy,
    )


def _rounds(open_run: Callable[[], Callable[[], None]], protocol: MeasurementProtocol, runtime: str,
            timer: Timer, attempt: int) -> Latency:
    rounds: list[list[float]] = []
    warmups = 0
    inner = 1
    for r in range(protocol.rounds):
        if r:
            with _traced("cooldown"):
                timer.sleep(protocol.cooldown_seconds)
        with _traced("open"):
            run_once = open_run()
        with _traced("warmup"):
            runs, per_run_ms = _warm_up(run_once, protocol, timer)
        warmups += runs
        if r == 0:  # one batch size for every round, so their samples compare
            inner = inner_runs(per_run_ms, timer.resolution_ms)
        with _traced("timed"):
            rounds.append(_timed_runs(run_once, protocol, timer, inner))
    return summarize(rounds, warmup_runs=warmups, runtime=runtime, inner_runs=inner, attempts=attempt)


@contextmanager
def _traced(phase: str) -> Iterator[None]:
    """Append the phase's span to $HILAS_PROTOCOL_TRACE, if set (see the module's docstring)."""
    path = os.environ.get(TRACE_ENV)
    if not path:
        yield
        return
    start = time.monotonic()
    try:
        yield
    finally:
        span = {"pid": os.getpid(), "phase": phase, "start": start, "end": time.monotonic()}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(span) + "\n")


def inner_runs(per_run_ms: float, resolution_ms: float) -> int:
    """How many runs one sample must span to last TICKS_PER_SAMPLE timer ticks."""
    floor_ms = TICKS_PER_SAMPLE * resolution_ms
    return 1 if per_run_ms >= floor_ms else math.ceil(floor_ms / max(per_run_ms, resolution_ms / 10))


def _warm_up(run_once: Callable[[], None], protocol: MeasurementProtocol, timer: Timer) -> tuple[int, float]:
    """Untimed runs so caches, allocators and clocks settle; returns how many ran and a typical run's ms."""
    budget_ms = protocol.warmup_seconds * 1e3
    recent: deque[float] = deque(maxlen=16)
    elapsed, runs = 0.0, 0
    while runs < max(protocol.warmup_runs, 1) or elapsed < budget_ms:
        ms = timer.time(run_once, 1)
        recent.append(ms)
        elapsed += ms
        runs += 1
    return runs, statistics.median(recent)


def _timed_runs(run_once: Callable[[], None], protocol: MeasurementProtocol, timer: Timer, inner: int) -> list[float]:
    """Per-run milliseconds, one sample per `inner` runs, until both minimums are met or a cap is hit."""
    min_ms, max_ms = protocol.min_seconds * 1e3, protocol.max_seconds * 1e3
    samples: list[float] = []
    elapsed = 0.0
    while True:
        ms = timer.time(run_once, inner)
        samples.append(ms / inner)
        elapsed += ms
        if len(samples) >= protocol.max_samples or elapsed >= max_ms:
            return samples
        if len(samples) >= protocol.min_samples and elapsed >= min_ms:
            return samples
