"""`hilas front show|plot|recover|report|export`: what a user does with a run's fronts."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from hilas.search.errors import UserError
from hilas.search.results.fronts import Front
from hilas.search.run import Run

from .common import out, parse_assignments, progress_bars, training_progress, user_errors
from .tables import front_table

app = typer.Typer(no_args_is_help=True, help="Inspect the fronts of a run.")


class Accuracy(str, Enum):
    """Which accuracy the fronts rank by: the search's proxy, the accuracy after `front recover`, or both."""

    proxy = "proxy"
    recovered = "recovered"
    both = "both"


ACCURACY_HELP = "proxy: the search's accuracy proxy; recovered: after `hilas front recover`"


def _chosen(run_dir: Path, device: Optional[str], accuracy: Accuracy = Accuracy.proxy) -> list[Front]:
    fronts = Run(run_dir).fronts(accuracy.value)
    if accuracy is Accuracy.recovered and not any(f.evaluated for f in fronts.values()):
        raise UserError(f"run {run_dir} has no recovered front yet; make one with `hilas front recover {run_dir}`")
    if device is None:
        return list(fronts.values())
    if device not in fronts:
        raise UserError(f"run {run_dir} has no device '{device}'; its devices: {', '.join(fronts)}")
    return [fronts[device]]


@app.command("show")
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


@app.command("plot")
def front_plot(run_dir: Path = typer.Argument(...), device: Optional[str] = typer.Option(None, help="Device name."),
               output: Path = typer.Option(Path("front.png"), "-o", "--output", help="PNG file to write."),
               accuracy: Accuracy = typer.Option(Accuracy.proxy, help=ACCURACY_HELP + "; both: the two fronts.")):
    """Plot accuracy against measured latency, one panel per device."""
    from hilas.search.present.plot import plot_fronts

    with user_errors():
        if accuracy is Accuracy.both:
            path = plot_fronts(_chosen(run_dir, device), output, _chosen(run_dir, device, Accuracy.recovered))
        else:
            path = plot_fronts(_chosen(run_dir, device, accuracy), output)
        out.print(f"wrote {path}")


@app.command("recover")
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
                                                        "of the image), mixup (false), feature_weight (1.0; 0 "
                                                        "for logits only)."),
                  host: str = typer.Option("auto", help="Where to distil: auto (the host's CUDA GPU when torch "
                                                        "sees one), cpu or cuda.")):
    """Fine-tune each front member by distillation from the original model on the few-shot images, score it on
    the validation split, and store the front after recovery (resumable: recovered members are kept). A member
    that scores lower after distillation keeps the weights it had before."""
    from hilas.evaluators.distillation import Recipe

    with user_errors():
        try:
            chosen = Recipe.from_options(parse_assignments(recipe, "--recipe"))
        except ValueError as e:
            raise UserError(str(e)) from None
        run = Run(run_dir)
        with progress_bars() as progress:
            fronts = run.recover(device=device, shots=shots, recipe=chosen, members=members, host=host,
                                 on_progress=progress.on_evaluation, on_train_epoch=progress.on_train_epoch)
        for front in fronts.values():
            if device is None or front.device == device:
                out.print(front_table(front))
        out.print(recovery_summary(run))
        out.print(f"next: hilas front plot {run_dir} --accuracy both   |   hilas front show {run_dir} "
                  "--accuracy recovered --json")


def recovery_summary(run: Run) -> str:
    """One line on the members recovered: seconds each, and how many kept the weights they started from."""
    rows = run.recovered()
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


@app.command("report")
def front_report(run_dir: Path = typer.Argument(...),
                 output: Optional[Path] = typer.Option(None, "-o", "--output",
                                                       help="HTML file to write (default RUN_DIR/report.html).")):
    """Write one self-contained HTML report of a run's fronts (opens with no network)."""
    with user_errors():
        out.print(f"wrote {Run(run_dir).report(output)}")


@app.command("export")
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
        path = Run(run_dir).export(candidate, output, weights, on_train_epoch)
    out.print(f"wrote {path}: {', '.join(sorted(p.name for p in path.iterdir()))}", soft_wrap=True)
    out.print(f'load it in Python with: import hilas; model = hilas.load_model("{path}")', soft_wrap=True)
