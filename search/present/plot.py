"""The front as a PNG: accuracy against measured latency, baseline marked, better directions shown."""

from __future__ import annotations

from pathlib import Path

from hilas.search.results.fronts import Front


def plot_fronts(fronts: list[Front], path: Path, recovered: list[Front] | None = None) -> Path:
    """One panel per front; `recovered` (the same devices' fronts after recovery) is drawn over them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fronts), figsize=(6.4 * len(fronts), 4.8), squeeze=False)
    after = {f.device: f for f in recovered or []}
    for ax, front in zip(axes[0], fronts):
        ev = front.evaluated
        ax.scatter([p.latency.median_ms for p in ev], [100 * p.accuracy for p in ev], s=12, color="#bbbbbb",
                   label=f"evaluated ({len(ev)})")
        pts = front.points
        ax.step([p.latency.median_ms for p in pts], [100 * p.accuracy for p in pts], where="post",
                color="#0072B2", lw=1.2)
        ax.errorbar([p.latency.median_ms for p in pts], [100 * p.accuracy for p in pts],
                    xerr=[[0] * len(pts), [p.latency.p90_ms - p.latency.median_ms for p in pts]],
                    fmt="o", color="#0072B2", ms=5, capsize=2,
                    label=f"Pareto front{_after(front)} ({len(pts)}; bar to p90)")
        if front.device in after:
            rec = after[front.device].points
            ax.step([p.latency.median_ms for p in rec], [100 * p.accuracy for p in rec], where="post",
                    color="#009E73", lw=1.2)
            ax.scatter([p.latency.median_ms for p in rec], [100 * p.accuracy for p in rec], marker="D", s=28,
                       color="#009E73", zorder=4, label=f"Pareto front after recovery ({len(rec)})")
        if front.baseline:
            b = front.baseline
            ax.scatter([b.latency.median_ms], [100 * b.accuracy], marker="*", s=180, color="#D55E00",
                       zorder=5, label="unpruned baseline")
        ax.set_xlabel(f"median latency on {front.device} (ms)  \u2190 lower is better")
        ax.set_ylabel("top-1 accuracy (%)  \u2191 higher is better")
        ax.set_title(f"{front.device}{_after(front)}: hypervolume {front.hypervolume:.3f}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _after(front: Front) -> str:
    return " after recovery" if front.accuracy_source == "recovered" else ""
