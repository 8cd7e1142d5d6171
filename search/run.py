"""`Run`: one run directory and everything the `hilas` commands do with it, as calls (Optuna's `Study`).

    run = hilas.Run.start(hilas.load_config("run.toml"), "runs/a")   # search (`hilas search run`)
    run = hilas.Run("runs/a")                                         # or open one
    run.fronts()                                                      # `hilas front show`
    run.recover(members=6)                                            # `hilas front recover`
    run.export(12)                                                    # `hilas front export`
    run.report()                                                      # `hilas front report`

Opening a run and reading its fronts imports neither torch nor Ray: the commands that search, recover or
export load what they need when called. `hilas.compare_runs` and `hilas.load_model` complete it
(`hilas runs compare`, and an export back as a module).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from hilas.search.results.fronts import Front, read_fronts
from hilas.search.store import RecoveredRow, open_run

if TYPE_CHECKING:
    from hilas.devices import DeviceRegistry
    from hilas.evaluators import Recipe
    from hilas.search.config import RunConfig
    from hilas.search.runs import Progress


class Run:
    """A run directory, finished or not (`Run("runs/demo-...")`); `Run.start` makes one by searching."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        open_run(self.dir).close()  # a missing or foreign directory fails here, with a UserError

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    @classmethod
    def start(cls, cfg: RunConfig, run_dir: str | Path, progress: Progress | None = None,
              registry: DeviceRegistry | None = None) -> Run:
        """Validate everything, create the run directory and search (`hilas search run`). Bad input creates
        nothing."""
        from hilas.search.runs import start_run

        start_run(cfg, Path(run_dir), progress, registry)
        return cls(run_dir)

    def resume(self, progress: Progress | None = None) -> dict[str, Front]:
        """Continue the search where it stopped (`hilas search resume`); finished work is read back."""
        from hilas.search.runs import resume_run

        return resume_run(self.dir, progress)

    def fronts(self, accuracy: str = "proxy") -> dict[str, Front]:
        """One Pareto front per device (`hilas front show`), by the search's proxy accuracy or ("recovered")
        by the accuracy after `recover`."""
        return read_fronts(self.dir, accuracy)

    def fronts_data(self) -> dict[str, dict]:
        """The fronts as plain data, per device: what `hilas front show --json` prints."""
        return {device: front.to_json() for device, front in self.fronts().items()}

    def summary(self) -> dict:
        """What the last session of the search did (latencies measured, reused, failed; drift repeats)."""
        store = open_run(self.dir)
        try:
            return store.summary
        finally:
            store.close()

    def recover(self, *, device: str | None = None, shots: int | None = None, recipe: Recipe | None = None,
                members: int | None = None, host: str = "auto",
                on_progress: Callable[[str, int, int], None] | None = None,
                on_train_epoch: Callable[[int, int], None] | None = None) -> dict[str, Front]:
        """Recover the fronts' members by distillation (`hilas front recover`; see `results.recover`) and return
        the fronts after recovery."""
        from hilas.evaluators import Recipe
        from hilas.search.results.recover import recover_front

        return recover_front(self.dir, device=device, shots=shots, recipe=recipe or Recipe(), members=members,
                             host=host, on_progress=on_progress, on_train_epoch=on_train_epoch)

    def recovered(self) -> list[RecoveredRow]:
        """The candidates the latest `recover` settings recovered."""
        store = open_run(self.dir)
        try:
            latest = store.recovery
            return store.recovered(latest["method"]) if latest else []
        finally:
            store.close()

    def report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report (`hilas front report`), by default to RUN_DIR/report.html."""
        from hilas.search.present.report import write_report

        return write_report(self.dir, Path(path) if path else None)

    def export(self, candidate: int, out_dir: str | Path | None = None, weights: str | None = None,
               on_train_epoch: Callable[[int, int], None] | None = None) -> Path:
        """Export a candidate (`hilas front export`; `weights` "recovered" or "proxy"); load it back with
        `hilas.load_model(path)`."""
        from hilas.search.results.export import export_candidate

        return export_candidate(self.dir, candidate, Path(out_dir) if out_dir else None, on_train_epoch, weights)
