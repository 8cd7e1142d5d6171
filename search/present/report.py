"""The run report: one HTML file to choose a model from, which opens with no network.

Per device it shows the Pareto front (hover a point for its numbers), the unpruned baseline, the
front after recovery when the run has recovered accuracies, hypervolume per generation, the
measurement settings, the device's fingerprint and a sortable table of the front.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from html import escape
from importlib.metadata import version
from pathlib import Path

from hilas.devices import fingerprint
from hilas.search.present.html import Cell, page, settings_table, sortable_table
from hilas.search.present.svg import Mark, Series, chart, legend
from hilas.search.results.compare import Comparison
from hilas.search.results.fronts import Front, Point, hypervolume, non_dominated, recovered_points, run_fronts
from hilas.search.store import Store, open_run

REPORT_NAME = "report.html"


@dataclass(frozen=True)
class DeviceView:
    """What the report shows for one device of a run."""

    front: Front
    kind: str
    info: dict
    recovered: list[Point]  # every candidate with an accuracy after recovery, at its latency here
    history: list[tuple[int, int, float]]  # generation, candidates evaluated, hypervolume
    widths: dict[str, dict[str, int]]  # structure_key -> channels kept per group
    dropped: dict[str, list[str]]  # structure_key -> dropped blocks

    @property
    def recovered_front(self) -> list[Point]:
        return non_dominated(self.recovered)


def write_report(run_dir: Path, path: Path | None = None) -> Path:
    """Write the report of a run (to RUN_DIR/report.html unless `path` says otherwise)."""
    run_dir = Path(run_dir)
    path = Path(path) if path else run_dir / REPORT_NAME
    store = open_run(run_dir)
    try:
        html = render_report(run_dir, store)
    finally:
        store.close()
    path.write_text(html, encoding="utf-8")
    return path


def device_views(run_dir: Path, store: Store) -> list[DeviceView]:
    devices = store.devices()
    generations = store.generations()
    views = []
    for name, front in run_fronts(run_dir, store).items():
        recovered = recovered_points(store, name)
        shown = {p.structure_key for p in [*front.points, *non_dominated(recovered), *filter(None, [front.baseline])]}
        structures = {a: store.structure(a) for a in shown}
        views.append(DeviceView(
            front=front, kind=devices.get(name, {}).get("kind", "?"), info=devices.get(name, {}).get("info", {}),
            recovered=recovered, history=[(g, n, hv[name]) for g, n, hv in generations if name in hv],
            widths={a: s["widths"] for a, s in structures.items() if s},
            dropped={a: s["dropped"] for a, s in structures.items() if s}))
    return views


def render_report(run_dir: Path, store: Store) -> str:
    views = device_views(run_dir, store)
    methods = store.recovery_methods()
    nav = " ".join(f'<a href="#device-{i}">{escape(v.front.device)}</a>' for i, v in enumerate(views))
    body = [f"<header><h1>hilas report: {escape(run_dir.name or str(run_dir))}</h1>",
            f'<p class="lead">Pareto fronts of top-1 accuracy against latency measured on {len(views)} '
            f"device{'s' if len(views) != 1 else ''}. Hover or focus a point for its numbers; click a column "
            f"header to sort a table.</p>",
            f"<nav>Devices: {nav}</nav>",
            f'<div class="columns"><div><h3>Run</h3>{settings_table(run_facts(run_dir, store))}</div>'
            f"<div><h3>Accuracy</h3>{accuracy_note(store.split or {}, store.config, methods)}</div></div></header>"]
    body += [device_section(i, v, methods) for i, v in enumerate(views)]
    body.append(f"<footer>Written by hilas {version('hilas')} on {time.strftime('%Y-%m-%d %H:%M')} from "
                f"{escape(str(run_dir))}. This file is self-contained: it needs no network.</footer>")
    return page(f"hilas report: {run_dir.name}", "\n".join(body))


def run_facts(run_dir: Path, store: Store) -> dict[str, object]:
    cfg = store.config
    counts = store.counts()
    summary = store.summary or {}
    facts = {"run directory": str(run_dir), "status": store.status,
             "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(store.created)),
             "model": cfg["model"], "data": f"{cfg['data']}, {cfg['shots']} images per class for compression",
             "space": ", ".join(k for k in ("masks", "drops") if cfg[k]) or "none",
             "candidates": f"{counts['candidates']} evaluated of a budget of {cfg['budget']} "
                           f"(population {cfg['population']}, seed {cfg['seed']})",
             "failures": counts["failures"]}
    if summary:
        facts["latencies (last session)"] = (f"{summary['latency_measured']} measured, "
                                             f"{summary['latency_from_database']} from the latency database, "
                                             f"{summary['latency_failed']} failed")
    return facts


def accuracy_note(split: dict, cfg: dict, methods: list[str]) -> str:
    """What the search's top-1 is: the proxy as this run configured it."""
    few, val = len(split.get("few_shot", [])), len(split.get("validation", []))
    tuned = (f"then {cfg['distillation_steps']} steps of distillation from the original model on them (every "
             "weight fine-tuned), then" if cfg.get("proxy") == "distillation" else "then")
    note = (f"<p>Top-1 is the search's proxy: BatchNorm statistics re-estimated on {few} few-shot images, {tuned} "
            f"top-1 on {val} held-out validation images."
            + (" No weight was fine-tuned." if cfg.get("proxy") != "distillation" else "") + "</p>")
    if methods:
        note += (f"<p>After recovery ({escape(', '.join(methods))}): top-1 on the same validation images "
                 f"once the candidate's weights were recovered; shown beside the proxy.</p>")
    return note + ("<p>Hypervolume: the area dominated in (error, latency / baseline latency) up to (1, 1); "
                   "larger is better.</p>")


def tip(p: Point, base: Point | None, recovered: float | None, label: str = "") -> str:
    """A point's numbers, as its hover text."""
    lat = p.latency
    lines = [f"{label}candidate {p.candidate}"
             + (" (the unpruned baseline)" if base and p.model_key == base.model_key else ""),
             f"top-1 {100 * p.accuracy:.1f} %"
             + (f" (after recovery {100 * recovered:.1f} %)" if recovered is not None else ""),
             f"median {lat.median_ms:.4f} ms, p90 {lat.p90_ms:.4f} ms",
             f"n {lat.n} samples, CV {100 * lat.cv:.1f} %, rounds CV {100 * lat.rounds_cv:.1f} %",
             f"{p.params:,} params, {p.flops / 1e6:.2f} MFLOPs"]
    if base:
        lines.append(f"{base.latency.median_ms / lat.median_ms:.2f}x speed-up over the baseline")
    return "\n".join(lines)


def point_marks(points: list[Point], device: str, base: Point | None, recovered: dict[str, float], *,
                whisker: bool = False, after_recovery: bool = False) -> list[Mark]:
    """Chart marks keyed DEVICE/CANDIDATE, the key of the candidate's table row."""
    return [Mark(p.latency.median_ms, 100 * p.accuracy,
                 tip(p, base, None if after_recovery else recovered.get(p.model_key),
                     "after recovery: " if after_recovery else ""),
                 f"{device}/{p.candidate}", p.latency.p90_ms if whisker else None) for p in points]


def device_section(index: int, view: DeviceView, methods: list[str]) -> str:
    front, base = view.front, view.front.baseline
    device = front.device
    recovered = {p.model_key: p.accuracy for p in view.recovered}
    on_front = {p.model_key for p in front.points}
    others = [p for p in front.evaluated if p.model_key not in on_front]
    series = [Series(f"evaluated ({len(front.evaluated)})", "cg", "circle",
                     point_marks(others, device, base, recovered), size=3.2, focusable=False),
              Series(f"Pareto front, search proxy ({len(front.points)}; bar to p90)", "c0", "circle",
                     point_marks(front.points, device, base, recovered, whisker=True), line="step")]
    if view.recovered:
        series.append(Series(f"Pareto front after recovery ({len(view.recovered_front)})", "c2", "diamond",
                             point_marks(view.recovered_front, device, base, recovered, after_recovery=True),
                             line="step"))
    if base:
        series.append(Series("unpruned baseline", "c1", "star",
                             point_marks([base], device, base, recovered, whisker=True)))
    plot = chart(series, x_label=f"median latency on {device} (ms)  \u2190 lower is better",
                 y_label="top-1 accuracy (%)  \u2191 higher is better", title=f"Pareto front on {device}",
                 x_from_zero=True, y_bounds=(0.0, 100.0))
    history = chart([Series("hypervolume", "c0", "circle",
                            [Mark(n, hv, f"generation {g}: {n} candidates evaluated, hypervolume {hv:.3f}")
                             for g, n, hv in view.history], line="line")],
                    x_label="candidates evaluated", y_label="hypervolume  \u2191 higher is better",
                    title=f"Hypervolume per generation on {device}", y_bounds=(0.0, 1.0), size=(760, 280))
    lead = (f"{len(front.points)} of {len(front.evaluated)} evaluated candidates on the front, hypervolume "
            f"{front.hypervolume:.3f}")
    if view.recovered and base:
        lead += f"; after recovery {hypervolume(view.recovered, base.latency.median_ms):.3f}"
    if base:
        lead += (f". Unpruned baseline: candidate {base.candidate}, top-1 {100 * base.accuracy:.1f} %, median "
                 f"{base.latency.median_ms:.4f} ms")
    return (f'<section class="device" id="device-{index}"><h2>{escape(device)} '
            f'<span class="note">({escape(view.kind)})</span></h2><p class="lead">{escape(lead)}.</p>'
            f"<figure>{plot}{legend(series)}<figcaption>Bars reach each front point's p90 latency; grey points "
            f"are the other candidates evaluated.</figcaption></figure>"
            f"<h3>Front</h3>{front_table(view, recovered, bool(methods))}"
            f"<h3>Hypervolume per generation</h3>{history}"
            f'<div class="columns"><div><h3>Measurement settings</h3>{measurement_settings(front)}</div>'
            f"<div><h3>Device fingerprint</h3>{settings_table(fingerprint_facts(view.kind, view.info))}</div>"
            f"</div></section>")


def front_table(view: DeviceView, recovered: dict[str, float], with_recovered: bool) -> str:
    front, base = view.front, view.front.baseline
    proxy = {p.model_key for p in front.points}
    after = {p.model_key for p in view.recovered_front}
    by_key = {p.model_key: p for p in front.evaluated}
    rows = ([base] if base else []) + sorted((by_key[k] for k in (proxy | after) - {base.model_key if base else None}
                                              if k in by_key), key=lambda p: p.latency.median_ms)
    headers = ["id", "top-1 %"] + (["after recovery %", "on front"] if with_recovered else []) + [
        "median ms", "p90 ms", "n", "samples CV %", "rounds CV %", "speed-up", "MFLOPs", "params", "dropped blocks",
        "channels kept per group"]
    groups: list[str] = []
    body = []
    for p in rows:
        lat, widths = p.latency, view.widths.get(p.structure_key, {})
        groups = groups or list(widths)
        on = {(True, True): "both", (True, False): "proxy", (False, True): "recovered"}.get(
            (p.model_key in proxy, p.model_key in after), "-")
        cells = [Cell(f"{p.candidate}{'*' if base and p.model_key == base.model_key else ''}", p.candidate, "text"),
                 Cell(f"{100 * p.accuracy:.1f}", p.accuracy)]
        if with_recovered:
            r = recovered.get(p.model_key)
            cells += [Cell(f"{100 * r:.1f}" if r is not None else "-", r if r is not None else -1.0),
                      Cell(on, None, "text")]
        speedup = base.latency.median_ms / lat.median_ms if base else None
        cells += [Cell(f"{lat.median_ms:.4f}", lat.median_ms), Cell(f"{lat.p90_ms:.4f}", lat.p90_ms),
                  Cell(str(lat.n), lat.n), Cell(f"{100 * lat.cv:.1f}", lat.cv),
                  Cell(f"{100 * lat.rounds_cv:.1f}", lat.rounds_cv),
                  Cell(f"{speedup:.2f}x" if speedup else "-", speedup or 0.0),
                  Cell(f"{p.flops / 1e6:.2f}", p.flops), Cell(f"{p.params:,}", p.params),
                  Cell(", ".join(view.dropped.get(p.structure_key, [])) or "-", None, "text"),
                  Cell(" ".join(str(w) for w in widths.values()), None, "text mono")]
        body.append((f"{front.device}/{p.candidate}", cells))
    caption = ("* the unpruned baseline. Speed-up: the baseline's median latency over the candidate's. "
               + (f"Channels kept per group, in the order {', '.join(groups)} (0: inside a dropped block)."
                  if groups else ""))
    return sortable_table(headers, body, caption=caption)


def measurement_settings(front: Front) -> str:
    """The settings the device's latencies were measured with (stored with every measurement)."""
    if not front.evaluated:
        return '<p class="empty">No successful measurement yet.</p>'
    used = Counter(json.dumps(p.latency.protocol, sort_keys=True) for p in front.evaluated)
    common, n = used.most_common(1)[0]
    lat = next(p.latency for p in front.evaluated if json.dumps(p.latency.protocol, sort_keys=True) == common)
    table = settings_table({**json.loads(common), "runtime": lat.runtime, "harness": lat.harness})
    if len(used) > 1:
        table += (f'<p class="note">{len(front.evaluated) - n} of {len(front.evaluated)} latencies used other '
                  f"settings (e.g. reused from the latency database); the store keeps each one's.</p>")
    return table


def fingerprint_facts(kind: str, info: dict) -> dict[str, object]:
    """A device's info() as rows: what it is, its runtime, and its state when the run started."""
    facts: dict[str, object] = {"kind": kind, "fingerprint": fingerprint(info) if info else "-"}
    if "device" not in info:
        return {**facts, **{k: v for k, v in info.items() if k != "kind"}}
    facts.update(info["device"])
    facts.update({f"runtime {k}": v for k, v in info.get("runtime", {}).items()})
    facts.update({f"at start: {k}": v for k, v in info.get("state", {}).items()})
    return facts


MARKERS = ("circle", "square", "diamond", "triangle")


def write_comparison(comparison: Comparison, path: Path) -> Path:
    """Write the comparison of several runs' fronts as one self-contained HTML page."""
    path = Path(path)
    path.write_text(render_comparison(comparison), encoding="utf-8")
    return path


def render_comparison(comparison: Comparison) -> str:
    device, ref = comparison.device, comparison.reference_ms
    series, rows = [], []
    for i, r in enumerate(comparison.runs):
        base = r.front.baseline
        label = f"{r.run}: hypervolume {r.hypervolume:.3f}"
        series.append(Series(label, f"c{i % 7}", MARKERS[i % len(MARKERS)],
                             [Mark(p.latency.median_ms, 100 * p.accuracy, tip(p, base, None, f"{r.run}: "),
                                   f"{i}/{p.candidate}", p.latency.p90_ms) for p in r.front.points], line="step"))
        for p in r.front.points:
            lat = p.latency
            rows.append((f"{i}/{p.candidate}", [
                Cell(r.run, i, "text"), Cell(str(p.candidate), p.candidate),
                Cell(f"{100 * p.accuracy:.1f}", p.accuracy),
                Cell(f"{lat.median_ms:.4f}", lat.median_ms), Cell(f"{lat.p90_ms:.4f}", lat.p90_ms),
                Cell(str(lat.n), lat.n), Cell(f"{100 * lat.cv:.1f}", lat.cv),
                Cell(f"{ref / lat.median_ms:.2f}x" if ref else "-", ref / lat.median_ms if ref else 0.0),
                Cell(f"{p.flops / 1e6:.2f}", p.flops), Cell(f"{p.params:,}", p.params)]))
    plot = chart(series, x_label=f"median latency on {device} (ms)  \u2190 lower is better",
                 y_label="top-1 accuracy (%)  \u2191 higher is better", title=f"Pareto fronts on {device}",
                 x_from_zero=True, y_bounds=(0.0, 100.0))
    table = sortable_table(["run", "id", "top-1 %", "median ms", "p90 ms", "n", "samples CV %", "speed-up", "MFLOPs",
                            "params"], rows,
                           caption="Every run's front. Speed-up: over the reference baseline latency.")
    summary = sortable_table(
        ["run", "evaluated", "on front", "hypervolume", "own hypervolume", "fingerprint"],
        [(f"run-{i}", [Cell(r.run, i, "text"), Cell(str(len(r.front.evaluated)), len(r.front.evaluated)),
                       Cell(str(len(r.front.points)), len(r.front.points)),
                       Cell(f"{r.hypervolume:.3f}", r.hypervolume),
                       Cell(f"{r.front.hypervolume:.3f}", r.front.hypervolume), Cell(r.fingerprint, None, "text mono")])
         for i, r in enumerate(comparison.runs)],
        caption="Own hypervolume: against the run's own baseline latency, as `hilas front show` prints it.")
    reference = (f"Hypervolumes are measured against one reference, the unpruned baseline's median latency in "
                 f"{comparison.reference_run} ({ref:.4f} ms), so they compare." if ref else
                 "No run has a measured baseline, so no hypervolume could be computed.")
    warning = ("" if comparison.same_device else
               f'<p class="warning">The runs measured {escape(device)} as different devices or runtimes (their '
               f"fingerprints differ): their latencies may not compare.</p>")
    body = (f"<header><h1>hilas comparison on {escape(device)}</h1><p class=\"lead\">The Pareto fronts of "
            f"{len(comparison.runs)} runs. {escape(reference)} Hover or focus a point for its numbers.</p>"
            f"{warning}</header><figure>{plot}{legend(series)}<figcaption>Bars reach each point's p90 "
            f"latency.</figcaption></figure>{summary}<h2>Fronts</h2>{table}"
            f"<footer>Written by hilas {version('hilas')} on {time.strftime('%Y-%m-%d %H:%M')}. This file is "
            f"self-contained: it needs no network.</footer>")
    return page(f"hilas comparison on {device}", body)
