"""The `hilas` command line."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from devices import DeviceRegistry

from .config import RunConfig, load_config, validate
from .errors import UserError, user_errors
from .fronts import Front
from .plot import plot_fronts
from . import devices_cli, runs

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hardware-in-the-loop architecture search: Pareto fronts of accuracy against "
                       "latency measured on real devices.")
search_app = typer.Typer(no_args_is_help=True, help="Run and resume searches.")
front_app = typer.Typer(no_args_is_help=True, help="Inspect the fronts of a run.")
runs_app = typer.Typer(no_args_is_help=True, help="List runs.")
app.add_typer(search_app, name="search")
app.add_typer(front_app, name="front")
app.add_typer(runs_app, name="runs")
app.add_typer(devices_cli.app, name="devices")

out = Console()
err = Console(stderr=True)


@contextlib.contextmanager
def progress_bars() -> Iterator[runs.Progress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bars:
        tasks: dict[str, int] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bars.add_task(what, total=total)
            bars.update(tasks[what], completed=done, total=max(total, done))

        yield runs.Progress(on_train_epoch=lambda e, n: update("training the default model (epochs)", e, n),
                            on_evaluation=update)


def _search(run_dir: Path, start: Callable[[runs.Progress], dict[str, Front]]) -> None:
    """Run `start` under progress bars, then print the fronts; Ctrl-C says how to resume."""
    started = time.perf_counter()
    try:
        with progress_bars() as progress:
            fronts = start(progress)
    except KeyboardInterrupt:
        err.print(f"interrupted; continue with: hilas search resume {escape(str(run_dir))}", soft_wrap=True)
        raise typer.Exit(130) from None
    _report(run_dir, fronts, time.perf_counter() - started)


def _report(run_dir: Path, fronts: dict[str, Front], seconds: float) -> None:
    for front in fronts.values():
        out.print(front_table(front))
    png = plot_fronts(list(fronts.values()), Path(run_dir) / "front.png")
    out.print(f"finished in {seconds:.0f} s; run directory: {run_dir}; plot: {png}")
    out.print(latency_summary(runs.summary(run_dir)))
    out.print(f"next: hilas front show {run_dir} --json   |   hilas front plot {run_dir}")


def latency_summary(summary: dict) -> str:
    """One line on where this session's latencies came from."""
    if not summary:
        return "latencies: no summary (the run did not finish)"
    reused = summary["latency_from_database"]
    looked_up = reused + summary["latency_measured"] + summary["latency_failed"]
    source = "not read: --fresh" if summary["fresh"] else f"{reused} of {looked_up} reused ({summary['database_hit_rate']:.0%})"
    line = (f"latencies: {summary['latency_measured']} measured, {summary['latency_failed']} failed; "
            f"latency database: {source}; batches repeated for drift: {summary['drift_repeats']} measurements")
    for device, why in summary.get("devices_lost", {}).items():
        line += f"\ndevice '{device}' was lost during the search and its front is partial: {why}"
    return line


def front_table(front: Front) -> Table:
    """The front, fastest first, under the baseline (marked *). Structures and every statistic are in --json."""
    base = front.baseline
    table = Table(title=f"Pareto front on {front.device}: {len(front.points)} of {len(front.evaluated)} "
                        f"evaluated, hypervolume {front.hypervolume:.3f}",
                  caption="id: candidate (* the unpruned baseline); median: of the rounds' medians; rounds CV: "
                          "their spread; p99, n and raw samples: --json and the store")
    for col in ("id", "top-1 %", "median ms", "p90 ms", "rounds CV %", "speed-up", "MFLOPs", "params"):
        table.add_column(col, justify="right")
    rows = ([base] if base else []) + [p for p in front.points if p is not base]
    for p in rows:
        speedup = f"{base.latency.median_ms / p.latency.median_ms:.2f}x" if base else "-"
        table.add_row(f"{p.candidate}{'*' if p is base else ''}", f"{100 * p.accuracy:.1f}",
                      f"{p.latency.median_ms:.4f}", f"{p.latency.p90_ms:.4f}", f"{100 * p.latency.rounds_cv:.1f}",
                      speedup, f"{p.flops / 1e6:.2f}", f"{p.params:,}")
    return table


# The demo's models run in about 0.1 ms, so a tenth of a second is still a thousand runs; the shorter
# protocol (the defaults are 1 s of each per round) lets the demo measure its few hundred structures in
# a few minutes. Rounds, the noise check and drift checks are as by default.
DEMO_MEASUREMENT = {"warmup_seconds": 0.1, "min_seconds": 0.1, "cooldown_seconds": 0.0}
FRESH_HELP = "Measure every structure again instead of reusing latencies from the latency database."


def _default_out(prefix: str) -> Path:
    return Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.command()
def demo(budget: int = typer.Option(RunConfig.budget, help="Candidates to evaluate."),
         population: int = typer.Option(RunConfig.population, help="NSGA-II population size."),
         seed: int = typer.Option(RunConfig.seed, help="Search seed."),
         out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/demo-TIME)."),
         fresh: bool = typer.Option(False, "--fresh", help=FRESH_HELP)):
    """Search the embedded digits ResNet on this machine's CPU and print the front."""
    with user_errors():
        cfg = RunConfig(budget=budget, population=population, seed=seed, fresh=fresh, measurement=DEMO_MEASUREMENT)
        validate(cfg, "demo")
        run_dir = out_dir or _default_out("demo")
        _search(run_dir, lambda progress: runs.start_run(cfg, run_dir, progress))


@search_app.command("run")
def search_run(config: Path = typer.Argument(..., help="Run config (TOML)."),
               out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/NAME-TIME)."),
               fresh: bool = typer.Option(False, "--fresh", help=FRESH_HELP),
               devices_file: Optional[Path] = typer.Option(
                   None, "--devices", metavar="FILE",
                   help="Device registry for names the config does not define (default: $HILAS_DEVICES or "
                        "the user's, see hilas devices list).")):
    """Start a search from a TOML config."""
    with user_errors():
        cfg = load_config(config)
        if fresh:
            cfg = dataclasses.replace(cfg, fresh=True)
        run_dir = out_dir or _default_out(config.stem)
        registry = DeviceRegistry(devices_file)
        _search(run_dir, lambda progress: runs.start_run(cfg, run_dir, progress, registry=registry))


@search_app.command("resume")
def search_resume(run_dir: Path = typer.Argument(..., help="Directory of the run to continue.")):
    """Continue a run that was interrupted, without repeating finished work."""
    with user_errors():
        _search(run_dir, lambda progress: runs.resume_run(run_dir, progress))


def _chosen(run_dir: Path, device: Optional[str]) -> list[Front]:
    fronts = runs.fronts(run_dir)
    if device is None:
        return list(fronts.values())
    if device not in fronts:
        raise UserError(f"run {run_dir} has no device '{device}'; its devices: {', '.join(fronts)}")
    return [fronts[device]]


@front_app.command("show")
def front_show(run_dir: Path = typer.Argument(...), device: Optional[str] = typer.Option(None, help="Device name."),
               as_json: bool = typer.Option(False, "--json", help="One JSON object (a list if several devices).")):
    """Print the front of each device of a run."""
    with user_errors():
        chosen = _chosen(run_dir, device)
        if as_json:
            data = [f.to_json() for f in chosen]
            sys.stdout.write(json.dumps(data[0] if len(data) == 1 else data, indent=2) + "\n")
            return
        for front in chosen:
            out.print(front_table(front))


@front_app.command("plot")
def front_plot(run_dir: Path = typer.Argument(...), device: Optional[str] = typer.Option(None, help="Device name."),
               output: Path = typer.Option(Path("front.png"), "-o", "--output", help="PNG file to write.")):
    """Plot accuracy against measured latency, one panel per device."""
    with user_errors():
        out.print(f"wrote {plot_fronts(_chosen(run_dir, device), output)}")


@runs_app.command("list")
def runs_list(root: Path = typer.Argument(Path("runs"), help="Directory holding run directories.")):
    """List the runs under a directory, newest first."""
    with user_errors():
        table = Table(title=f"runs in {root}")
        for col in ("run", "status", "created", "devices", "candidates", "latencies", "from database", "failures"):
            table.add_column(col)
        for r in runs.list_runs(root):
            table.add_row(r["run"], r["status"], time.strftime("%m-%d %H:%M", time.localtime(r["created"])),
                          ", ".join(r["devices"]), f"{r['candidates']}/{r['budget']}", str(r["measurements"]),
                          str(r["from_database"]), str(r["failures"]))
        out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
