"""A latency is a distribution of timings over independent rounds, never a single number."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

# Bump when the way hilas measures changes (protocol logic, timers, statistics), so latencies
# measured by an older harness are not reused from the latency database.
HARNESS_VERSION = "hilas-harness-2"


@dataclass(frozen=True)
class Latency:
    """Summary and raw samples of one measurement, in milliseconds.

    `median_ms`, the search objective, is the median of the rounds' medians: one disturbed
    round cannot move it. The other statistics are over all samples of all rounds.
    `rounds_cv` is the spread of the round medians (std / mean), the noise check's number.
    A sample is the mean of `inner_runs` back-to-back runs (more than 1 only for models
    shorter than the timer can resolve). The raw samples are kept, per round, so a later,
    stricter rule can re-judge a measurement without re-running it.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    cv: float
    n: int
    round_medians_ms: tuple[float, ...]
    rounds_cv: float
    samples_ms: tuple[tuple[float, ...], ...]
    inner_runs: int
    warmup_runs: int
    runtime: str
    attempts: int = 1
    protocol: dict = field(default_factory=dict)
    harness: str = HARNESS_VERSION
    reference_ms: tuple[float, ...] = ()  # the drift reference's medians around this measurement
    drift: float | None = None  # relative change of the reference across this measurement's batch

    def to_dict(self, *, samples: bool = True) -> dict:
        """Plain JSON-ready dict; without the raw samples if `samples` is False."""
        d = asdict(self)
        d["samples_ms"] = [list(r) for r in self.samples_ms] if samples else []
        d["round_medians_ms"] = list(self.round_medians_ms)
        d["reference_ms"] = list(self.reference_ms)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Latency:
        return cls(**{**d, "samples_ms": tuple(tuple(r) for r in d["samples_ms"]),
                      "round_medians_ms": tuple(d["round_medians_ms"]),
                      "reference_ms": tuple(d.get("reference_ms", ()))})

    def to_record(self) -> tuple[str, bytes]:
        """For a database: the summary as JSON and the raw samples as float32 bytes (4 bytes a sample)."""
        summary = self.to_dict(samples=False)
        summary["round_sizes"] = [len(r) for r in self.samples_ms]
        blob = np.concatenate([np.asarray(r, dtype=np.float32) for r in self.samples_ms]).tobytes()
        return json.dumps(summary), blob

    @classmethod
    def from_record(cls, summary_json: str, blob: bytes | None) -> Latency:
        """Back from to_record(); without `blob`, a summary with no raw samples (cheap, for tables)."""
        summary = json.loads(summary_json)
        bounds = np.cumsum([0, *summary.pop("round_sizes")])
        flat = np.frombuffer(blob or b"", dtype=np.float32).astype(np.float64)
        summary["samples_ms"] = [flat[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])] if blob else []
        return cls.from_dict(summary)


def summarize(rounds: Sequence[Sequence[float]], *, warmup_runs: int, runtime: str, inner_runs: int = 1,
              attempts: int = 1) -> Latency:
    """Build a Latency from the raw timings of one or more rounds.

    std is the population standard deviation (numpy's default, ddof=0); cv = std / mean
    (0 when the mean is 0).
    """
    per_round = [np.asarray(list(r), dtype=np.float64) for r in rounds]
    if not per_round or any(r.size == 0 for r in per_round):
        raise ValueError(f"no latency samples to summarize (runtime {runtime!r}); measure at least once per round")
    samples = np.concatenate(per_round)
    if not np.all(np.isfinite(samples)):
        raise ValueError(f"latency samples from runtime {runtime!r} contain NaN or infinity")
    if np.any(samples < 0):
        raise ValueError(f"latency samples from runtime {runtime!r} contain negative times")
    p10, p90, p99 = np.percentile(samples, [10, 90, 99])
    medians = np.array([np.median(r) for r in per_round])
    return Latency(
        median_ms=float(np.median(medians)),
        p10_ms=float(p10),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(samples.mean()),
        std_ms=float(samples.std()),
        min_ms=float(samples.min()),
        max_ms=float(samples.max()),
        cv=_cv(samples),
        n=int(samples.size),
        round_medians_ms=tuple(float(m) for m in medians),
        rounds_cv=_cv(medians),
        samples_ms=tuple(tuple(float(s) for s in r) for r in per_round),
        inner_runs=inner_runs,
        warmup_runs=warmup_runs,
        runtime=runtime,
        attempts=attempts,
    )


def _cv(values: np.ndarray) -> float:
    mean = float(values.mean())
    return float(values.std()) / mean if mean > 0 else 0.0
