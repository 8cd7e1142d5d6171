"""The tables the commands print (rich): a front, a comparison of runs, where a session's latencies came from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from hilas.search.results.fronts import Front

if TYPE_CHECKING:
    from hilas.search.results.compare import Comparison


def latency_summary(summary: dict) -> str:
    """One line on where this session's latencies came from."""
    if not summary:
        return "latencies: no summary (the run did not finish)"
    reused = summary["latency_from_database"]
    looked_up = reused + summary["latency_measured"] + summary["latency_failed"]
    source = ("not read: --fresh" if summary["fresh"]
              else f"{reused} of {looked_up} reused ({summary['database_hit_rate']:.0%})")
    line = (f"latencies: {summary['latency_measured']} measured, {summary['latency_failed']} failed; "
            f"latency database: {source}; batches repeated for drift: {summary['drift_repeats']} measurements")
    for device, why in summary.get("devices_lost", {}).items():
        line += f"\ndevice '{device}' was lost during the search and its front is partial: {why}"
    return line


def front_table(front: Front) -> Table:
    """The front, fastest first, under the baseline (marked *). Structures and every statistic are in --json."""
    base = front.baseline
    recovered = front.accuracy_source == "recovered"
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
