"""The Python API for notebooks: a run and what the `hilas front` commands do with it, as calls.

`hilas.compare_runs` and `hilas.load_model` complete it (`hilas runs compare`, and an export back as a module).
"""

from __future__ import annotations

from pathlib import Path

from .export import export_candidate
from .fronts import Front
from .report import write_report
from .runs import fronts, open_run


class Run:
    """A run directory, finished or not, opened for inspection (`Run("runs/demo-...")`)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        open_run(self.dir).close()  # a missing or foreign directory fails here, with a UserError

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    def fronts(self) -> dict[str, Front]:
        """One Pareto front per device (`hilas front show`)."""
        return fronts(self.dir)

    def fronts_data(self) -> dict[str, dict]:
        """The fronts as plain data, per device: what `hilas front show --json` prints."""
        return {device: front.to_json() for device, front in self.fronts().items()}

    def report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report (`hilas front report`), by default to RUN_DIR/report.html."""
        return write_report(self.dir, Path(path) if path else None)

    def export(self, candidate: int, out_dir: str | Path | None = None, weights: str | None = None) -> Path:
        """Export a candidate (`hilas front export`; `weights` "recovered" or "proxy"); load it back with
        `hilas.load_model(path)`."""
        return export_candidate(self.dir, candidate, Path(out_dir) if out_dir else None, weights=weights)
