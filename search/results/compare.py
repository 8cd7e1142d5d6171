"""Several runs' fronts on one device, side by side, with hypervolumes that compare.

Each run's own hypervolume is relative to its own baseline's latency, so two runs whose baselines
were timed differently would not compare; here every run is scored against one reference, the
first run's baseline latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hilas.devices import fingerprint
from hilas.search.errors import UserError
from hilas.search.results.fronts import Front, hypervolume, run_fronts
from hilas.search.store import open_run


@dataclass(frozen=True)
class RunFront:
    """One run's front in a comparison."""

    run: str
    front: Front
    hypervolume: float  # against the comparison's reference latency
    fingerprint: str

    def to_json(self) -> dict:
        return {**self.front.to_json(), "hypervolume": self.hypervolume, "own_hypervolume": self.front.hypervolume,
                "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Comparison:
    """The fronts of several runs on one device."""

    device: str
    reference_ms: float | None  # the baseline latency every hypervolume is measured against
    reference_run: str | None
    runs: list[RunFront]

    @property
    def same_device(self) -> bool:
        """Whether every run measured on the same device and runtime (equal fingerprints)."""
        return len({r.fingerprint for r in self.runs}) == 1

    def to_json(self) -> dict:
        return {"device": self.device, "reference_ms": self.reference_ms, "reference_run": self.reference_run,
                "same_device": self.same_device, "runs": [r.to_json() for r in self.runs]}


def compare_runs(run_dirs: list[str | Path], device: str | None = None) -> Comparison:
    """The runs' fronts on `device` (by default the one device they all have)."""
    if len(run_dirs) < 2:
        raise UserError("compare needs at least two run directories")
    loaded = []
    for run_dir in map(Path, run_dirs):
        store = open_run(run_dir)
        try:
            info = {d: v["info"] for d, v in store.devices().items()}
            loaded.append((run_dir, run_fronts(run_dir, store), info))
        finally:
            store.close()
    shared = [d for d in loaded[0][1] if all(d in fronts for _, fronts, _ in loaded)]
    if device is None:
        if len(shared) != 1:
            raise UserError("the runs share no device" if not shared else
                            f"the runs share several devices ({', '.join(shared)}); choose one with --device")
        device = shared[0]
    for run_dir, fronts, _ in loaded:
        if device not in fronts:
            raise UserError(f"run {run_dir} has no device '{device}'; its devices: {', '.join(fronts)}")
    reference = next(((str(r), f[device].baseline.latency.median_ms) for r, f, _ in loaded if f[device].baseline),
                     (None, None))
    runs = [RunFront(str(r), f[device], hypervolume(f[device].points, reference[1]),
                     fingerprint(info[device]) if device in info else "-") for r, f, info in loaded]
    return Comparison(device, reference[1], reference[0], runs)
