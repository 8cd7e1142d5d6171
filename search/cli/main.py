"""The `hilas` command line: `demo` and `search run|resume` here, the other groups in their own modules.

Each command imports what it needs when it runs: `hilas --help`, `devices list`, `runs list` and `front show`
load neither torch nor Ray nor onnx nor pymoo (`benchmarks/cli_startup.py` times them).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.markup import escape

from hilas.devices.registry import DeviceRegistry
from hilas.search.config import RunConfig, load_config, validate
from hilas.search.errors import UserError
from hilas.search.progress import Progress
from hilas.search.run import Run

from . import devices, front, runs
from .common import err, out, progress_bars, user_errors
from .tables import front_table, latency_summary

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hardware-in-the-loop architecture search: Pareto fronts of accuracy against "
                       "latency measured on real devices.")
search_app = typer.Typer(no_args_is_help=True, help="Run and resume searches.")
app.add_typer(search_app, name="search")
app.add_typer(front.app, name="front")
app.add_typer(runs.app, name="runs")
app.add_typer(devices.app, name="devices")


def _search(run_dir: Path, start: Callable[[Progress], object]) -> None:
    """Run `start` under progress bars, then print the fronts; Ctrl-C says how to resume."""
    started = time.perf_counter()
    try:
        with progress_bars() as progress:
            start(progress)
    except KeyboardInterrupt:
        err.print(f"interrupted; continue with: hilas search resume {escape(str(run_dir))}", soft_wrap=True)
        raise typer.Exit(130) from None
    _report(Run(run_dir), time.perf_counter() - started)


def _report(run: Run, seconds: float) -> None:
    from hilas.search.present.plot import plot_fronts

    fronts = run.fronts()
    for f in fronts.values():
        out.print(front_table(f))
    png = plot_fronts(list(fronts.values()), run.dir / "front.png")
    out.print(f"finished in {seconds:.0f} s; run directory: {run.dir}; plot: {png}")
    out.print(latency_summary(run.summary()))
    out.print(f"next: hilas front show {run.dir} --json   |   hilas front plot {run.dir}")


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
def demo(budget: Optional[int] = typer.Option(None, help="Genomes the search may ask for (default 480; 48 for "
                                                          "binary); a model asked for twice is evaluated once."),
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
        _search(run_dir, lambda progress: Run.start(cfg, run_dir, progress))


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
        _search(run_dir, lambda progress: Run.start(cfg, run_dir, progress, registry=registry))


@search_app.command("resume")
def search_resume(run_dir: Path = typer.Argument(..., help="Directory of the run to continue.")):
    """Continue a run that was interrupted, without repeating finished work."""
    with user_errors():
        _search(run_dir, lambda progress: Run(run_dir).resume(progress))


def main() -> None:
    app()
