"""A latency is a distribution of timings, never a single number."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class Latency:
    """Summary and raw samples of one measurement, in milliseconds.

    The raw samples are kept so that a later, stricter protocol can re-judge
    old measurements without re-running them.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    cv: float
    n: int
    samples_ms: tuple[float, ...]
    warmup_runs: int
    runtime: str

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (samples as a list), for the store."""
        d = asdict(self)
        d["samples_ms"] = list(self.samples_ms)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Latency:
        return cls(**{**d, "samples_ms": tuple(d["samples_ms"])})


def summarize(samples_ms: Iterable[float], *, warmup_runs: int, runtime: str) -> Latency:
    """Build a Latency from raw timings.

    std is the population standard deviation (numpy's default, ddof=0);
    cv = std / mean (0 when the mean is 0).
    """
    samples = np.asarray(list(samples_ms), dtype=np.float64)
    if samples.size == 0:
        raise ValueError(f"no latency samples to summarize (runtime {runtime!r}); measure at least once")
    if not np.all(np.isfinite(samples)):
        raise ValueError(f"latency samples from runtime {runtime!r} contain NaN or infinity: {samples.tolist()}")
    if np.any(samples < 0):
        raise ValueError(f"latency samples from runtime {runtime!r} contain negative times: {samples.tolist()}")
    p10, median, p90 = np.percentile(samples, [10, 50, 90])
    mean = float(samples.mean())
    std = float(samples.std())
    return Latency(
        median_ms=float(median),
        p10_ms=float(p10),
        p90_ms=float(p90),
        mean_ms=mean,
        std_ms=std,
        cv=std / mean if mean > 0 else 0.0,
        n=int(samples.size),
        samples_ms=tuple(float(s) for s in samples),
        warmup_runs=warmup_runs,
        runtime=runtime,
    )
