"""The `hilas` command line."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hilas.devices import DeviceRegistry
from hilas.evaluators import Recipe

from .compare import Comparison, compare_runs
from .config import RunConfig, load_config, validate
from .errors import UserError, user_errors
from .export import export_candidate
from .fronts import Front
from .plot import plot_fronts
from .recover import recover_front
from .report import write_comparison, write_report
from . import devices_cli, runs

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hardware-in-the-loop architecture search: Pareto fronts of accuracy against "
                       "latency measured on real devices.")
search_app = typer.Typer(no_args_is_help=True, help="Run and resume searches.")
front_app = typer.Typer(no_args_is_help=True, help="Inspect the fronts of a run.")
runs_app = typer.Typer(no_args_is_help=True, help="List and compare runs.")
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
    recovered = front.accuracy_kind == "recovered"
    table = Table(title=f"Pareto front{' after recovery' if recovered else ''} on {front.device}: "
                        f"{len(front.points)} of {len(front.evaluated)} {'recovered' if recovered else 'evaluated'}, "
                        f"hypervolume {front.hypervolume:.3f}",
                  caption="id: candidate (* the unpruned baseline"
                          + ("; ° scored lower after distillation, so it kept the weights it had before" if recovered
                             else "") + "); median: of the rounds' medians; rounds CV: their spread; p99, n and raw "
                          "samples: --json and the store")
    for col in ("id", "top-1 %", "median ms", "p90 ms", "rounds CV %", "speed-up", "MFLOPs", "params"):
        table.add_column(col, justify="right")
    rows = ([base] if base else []) + [p for p in front.points if p is not base]
    for p in rows:
        speedup = f"{base.latency.median_ms / p.latency.median_ms:.2f}x" if base else "-"
        table.add_row(f"{p.candidate}{'*' if p is base else ''}{'°' if p.kept == 'before' else ''}",
                      f"{100 * p.accuracy:.1f}",
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


# What each demo searches. Binary candidates need 1-bit kernels, which onnxruntime lacks: they are
# measured through TVM on this CPU; their space holds 64 structures, so a smaller budget covers it.
DEMO_SPACES = {
    "pruning": {},
    "binary": {"binary": True, "masks": False, "drops": False, "budget": 48, "population": 16,
               "devices": ("local-tvm",), "device_definitions": {"local-tvm": {"kind": "tvm-cpu"}}},
}


@app.command()
def demo(budget: Optional[int] = typer.Option(None, help="Candidates to evaluate (default 480; 48 for binary)."),
         population: Optional[int] = typer.Option(None, help="NSGA-II population size (default 32; 16 for binary)."),
         seed: int = typer.Option(RunConfig.seed, help="Search seed."),
         out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/demo-TIME)."),
         fresh: bool = typer.Option(False, "--fresh", help=FRESH_HELP),
         space: str = typer.Option("pruning", help="pruning: filter masks and block drops of the digits ResNet, "
                                                   "on onnxruntime; binary: the stage widths of a binary network "
                                                   "distilled from it, on TVM's 1-bit kernels.")):
    """Search the embedded digits ResNet (or binary networks distilled from it) on this machine's CPU and
    print the front."""
    with user_errors():
        if space not in DEMO_SPACES:
            raise UserError(f"--space must be one of {', '.join(DEMO_SPACES)}, got '{space}'")
        given = {k: v for k, v in (("budget", budget), ("population", population)) if v is not None}
        cfg = RunConfig(**{**DEMO_SPACES[space], **given}, seed=seed, fresh=fresh, measurement=DEMO_MEASUREMENT)
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


class Accuracy(str, Enum):
    """Which accuracy the fronts rank by: the search's proxy, the accuracy after `front recover`, or both."""

    proxy = "proxy"
    recovered = "recovered"
    both = "both"


ACCURACY_HELP = "proxy: the search's accuracy proxy; recovered: after `hilas front recover`"


def _chosen(run_dir: Path, device: Optional[str], accuracy: Accuracy = Accuracy.proxy) -> list[Front]:
    fronts = runs.fronts(run_dir, accuracy.value)
    if accuracy is Accuracy.recovered and not any(f.evaluated for f in fronts.values()):
        raise UserError(f"run {run_dir} has no recovered front yet; make one with `hilas front recover {run_dir}`")
    if device is None:
        return list(fronts.values())
    if device not in fronts:
        raise UserError(f"run {run_dir} has no device '{device}'; its devices: {', '.join(fronts)}")
    return [fronts[device]]


@front_app.command("show")
def front_show(run_dir: Path = typer.Argument(...), device: Optional[str] = typer.Option(None, help="Device name."),
               as_json: bool = typer.Option(False, "--json", help="One JSON object (a list if several devices)."),
               accuracy: Accuracy = typer.Option(Accuracy.proxy, help=ACCURACY_HELP + ".")):
    """Print the front of each device of a run."""
    with user_errors():
        if accuracy is Accuracy.both:
            raise UserError("front show prints one front at a time: --accuracy proxy or --accuracy recovered "
                            "(front plot draws both)")
        chosen = _chosen(run_dir, device, accuracy)
        if as_json:
            data = [f.to_json() for f in chosen]
            sys.stdout.write(json.dumps(data[0] if len(data) == 1 else data, indent=2) + "\n")
            return
        for front in chosen:
            out.print(front_table(front))


@front_app.command("plot")
def front_plot(run_dir: Path = typer.Argument(...), device: Optional[str] = typer.Option(None, help="Device name."),
               output: Path = typer.Option(Path("front.png"), "-o", "--output", help="PNG file to write."),
               accuracy: Accuracy = typer.Option(Accuracy.proxy, help=ACCURACY_HELP + "; both: the two fronts.")):
    """Plot accuracy against measured latency, one panel per device."""
    with user_errors():
        if accuracy is Accuracy.both:
            path = plot_fronts(_chosen(run_dir, device), output, _chosen(run_dir, device, Accuracy.recovered))
        else:
            path = plot_fronts(_chosen(run_dir, device, accuracy), output)
        out.print(f"wrote {path}")


@front_app.command("recover")
def front_recover(run_dir: Path = typer.Argument(...),
                  device: Optional[str] = typer.Option(None, help="Recover this device's front only (default: "
                                                                  "every device's)."),
                  shots: Optional[int] = typer.Option(None, help="Few-shot images per class (default: the run's)."),
                  members: Optional[int] = typer.Option(None, help="Recover at most this many members of each "
                                                                   "front, evenly spaced along it (default: all)."),
                  recipe: list[str] = typer.Option([], "--recipe", "-r", metavar="KEY=VALUE",
                                                   help="Change one setting of the distillation recipe; repeat for "
                                                        "several: steps (300), lr (0.003), batch_size (64), "
                                                        "temperature (4.0), batchnorm (train | frozen), shift (1/14 "
                                                        "of the image), mixup (false), feature_weight (0.0)."),
                  host: str = typer.Option("auto", help="Where to distil: auto (the host's CUDA GPU when torch "
                                                        "sees one), cpu or cuda.")):
    """Fine-tune each front member by distillation from the original model on the few-shot images, score it on
    the validation split, and store the front after recovery (resumable: recovered members are kept). A member
    that scores lower after distillation keeps the weights it had before."""
    with user_errors():
        try:
            chosen = Recipe.from_options(devices_cli.parse_assignments(recipe, "--recipe"))
        except ValueError as e:
            raise UserError(str(e)) from None
        with progress_bars() as progress:
            fronts = recover_front(run_dir, device=device, shots=shots, recipe=chosen, members=members, host=host,
                                   on_progress=progress.on_evaluation, on_train_epoch=progress.on_train_epoch)
        for front in fronts.values():
            if device is None or front.device == device:
                out.print(front_table(front))
        out.print(recovery_summary(run_dir))
        out.print(f"next: hilas front plot {run_dir} --accuracy both   |   hilas front show {run_dir} "
                  "--accuracy recovered --json")


def recovery_summary(run_dir: Path) -> str:
    """One line on the members recovered: seconds each, and how many kept the weights they started from."""
    rows = runs.recovered(run_dir)
    if not rows:
        return "recovered: nothing"
    seconds = sorted(r.seconds for r in rows if r.seconds is not None)
    kept = sum(r.kept == "before" for r in rows)
    line = f"recovered {len(rows)} members"
    if seconds:
        line += f", {seconds[len(seconds) // 2]:.0f} s each (median; {seconds[0]:.0f} to {seconds[-1]:.0f} s)"
    if kept:
        line += f"; {kept} scored lower after distillation and kept the weights they had before (marked °)"
    return line


@front_app.command("report")
def front_report(run_dir: Path = typer.Argument(...),
                 output: Optional[Path] = typer.Option(None, "-o", "--output",
                                                       help="HTML file to write (default RUN_DIR/report.html).")):
    """Write one self-contained HTML report of a run's fronts (opens with no network)."""
    with user_errors():
        out.print(f"wrote {write_report(run_dir, output)}")


@front_app.command("export")
def front_export(run_dir: Path = typer.Argument(...),
                 candidate: int = typer.Argument(..., help="Candidate id, as `hilas front show` prints it."),
                 output: Optional[Path] = typer.Option(None, "-o", "--output",
                                                       help="Directory to write (default RUN_DIR/exports/"
                                                            "candidate-ID)."),
                 weights: Optional[str] = typer.Option(None, help="recovered: the weights `front recover` "
                                                                  "fine-tuned (the default once it has); proxy: "
                                                                  "the weights the search scored.")):
    """Export a candidate as ONNX, a PyTorch state dict with its structure, and a summary."""
    with user_errors(), training_progress() as on_train_epoch:
        path = export_candidate(run_dir, candidate, output, on_train_epoch, weights)
    out.print(f"wrote {path}: {', '.join(sorted(p.name for p in path.iterdir()))}", soft_wrap=True)
    out.print(f'load it in Python with: import hilas; model = hilas.load_model("{path}")', soft_wrap=True)


@contextlib.contextmanager
def training_progress() -> Iterator[Callable[[int, int], None]]:
    """A progress bar for training the default model, shown only if it has to be trained (not cached)."""
    bars: list[Progress] = []

    def update(epoch: int, epochs: int) -> None:
        if not bars:
            bars.append(Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err))
            bars[0].start()
            bars[0].add_task("training the default model (epochs)", total=epochs)
        bars[0].update(bars[0].task_ids[0], completed=epoch)

    try:
        yield update
    finally:
        if bars:
            bars[0].stop()


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


def comparison_table(comparison: Comparison) -> Table:
    """One row per run: its front's size, its hypervolume against the shared reference, its extremes."""
    table = Table(title=f"fronts on {comparison.device}",
                  caption=f"hypervolume against the baseline latency of {comparison.reference_run} "
                          f"({comparison.reference_ms or 0:.4f} ms), so the runs compare")
    table.add_column("run", no_wrap=True)
    for col in ("evaluated", "on front", "hypervolume", "best top-1 %", "fastest median ms"):
        table.add_column(col, justify="right", no_wrap=col == "hypervolume")
    for r in comparison.runs:
        points = r.front.points
        table.add_row(r.run, str(len(r.front.evaluated)), str(len(points)), f"{r.hypervolume:.3f}",
                      f"{100 * max(p.accuracy for p in points):.1f}" if points else "-",
                      f"{min(p.latency.median_ms for p in points):.4f}" if points else "-")
    return table


@runs_app.command("compare")
def runs_compare(run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories."),
                 device: Optional[str] = typer.Option(None, help="Device name (default: the one the runs share)."),
                 output: Path = typer.Option(Path("compare.html"), "-o", "--output", help="HTML file to write.")):
    """Compare the fronts of several runs on one device: one table, one plot, a hypervolume each."""
    with user_errors():
        comparison = compare_runs(run_dirs, device)
        out.print(comparison_table(comparison))
        if not comparison.same_device:
            err.print(f"note: the runs measured '{comparison.device}' as different devices or runtimes (their "
                      "fingerprints differ): their latencies may not compare", soft_wrap=True)
        out.print(f"wrote {write_comparison(comparison, output)}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
