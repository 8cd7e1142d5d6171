"""`hilas runs list|compare`: the runs under a directory, and several runs' fronts side by side."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from hilas.search.store import list_runs

from .common import err, out, user_errors
from .tables import comparison_table

app = typer.Typer(no_args_is_help=True, help="List and compare runs.")


@app.command("list")
def runs_list(root: Path = typer.Argument(Path("runs"), help="Directory holding run directories.")):
    """List the runs under a directory, newest first."""
    with user_errors():
        table = Table(title=f"runs in {root}")
        for col in ("run", "status", "created", "devices", "candidates", "latencies", "from database", "failures"):
            table.add_column(col)
        for r in list_runs(root):
            table.add_row(r["run"], r["status"], time.strftime("%m-%d %H:%M", time.localtime(r["created"])),
                          ", ".join(r["devices"]), f"{r['candidates']}/{r['budget']}", str(r["measurements"]),
                          str(r["from_database"]), str(r["failures"]))
        out.print(table)


@app.command("compare")
def runs_compare(run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories."),
                 device: Optional[str] = typer.Option(None, help="Device name (default: the one the runs share)."),
                 output: Path = typer.Option(Path("compare.html"), "-o", "--output", help="HTML file to write.")):
    """Compare the fronts of several runs on one device: one table, one plot, a hypervolume each."""
    from hilas.search.present.report import write_comparison
    from hilas.search.results.compare import compare_runs

    with user_errors():
        comparison = compare_runs(run_dirs, device)
        out.print(comparison_table(comparison))
        if not comparison.same_device:
            err.print(f"note: the runs measured '{comparison.device}' as different devices or runtimes (their "
                      "fingerprints differ): their latencies may not compare", soft_wrap=True)
        out.print(f"wrote {write_comparison(comparison, output)}")
