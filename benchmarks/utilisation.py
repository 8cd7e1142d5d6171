"""Device utilisation: the fraction of a search's wall time its device spends in timed runs.

    python -m benchmarks.utilisation [--quick]

Runs the demo's search (the embedded digits ResNet on `local-cpu` under the demo's measurement
protocol) with a fresh latency database, so every structure is measured, and with
$HILAS_PROTOCOL_TRACE set, so the device's agent logs every phase of every round it measures
(session open, warm-up, timed runs, cooldown; see devices/protocol.py). For the whole run and for
its search loop alone, it reports the device's time in each phase, the rest (not measuring: waiting
for work, Ray calls, starting), and the fraction in timed runs. The samples the store keeps are a
cross-check: their sum is the timed-run time of the kept measurements by the device's own clock;
the trace's timed runs also hold the drift reference's runs and any rounds measured again. The
host's time on accuracy is the store's per-candidate seconds. Training the default model (once,
cached) happens before the clock starts. Results go to benchmarks/results/utilisation[-quick].*
and, for a full run, into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator

import ray
import torch

from hilas.devices import Latency
from hilas.devices.protocol import TRACE_ENV
from hilas.evaluators.default import default_task
from hilas.search import RunConfig, Store
from hilas.search.cli.main import DEMO_MEASUREMENT
from hilas.search.runs import start_run

from .machine import CpuTimes, machine, measured_on, share, versions
from .results_io import RESULTS, update_readme, write_atomically

PHASES = ("timed", "warmup", "open", "cooldown")
PHASE_NAMES = {"timed": "timed runs", "warmup": "warm-up", "open": "session open", "cooldown": "cooldown"}


@dataclass(frozen=True)
class Settings:
    """The search a run makes; recorded with its results."""

    quick: bool
    budget: int
    population: int
    seed: int = 0
    measurement: dict = field(default_factory=lambda: dict(DEMO_MEASUREMENT))
    drop_recovery_steps: int = RunConfig.drop_recovery_steps

    def config(self) -> RunConfig:
        """The demo's config with this budget, measuring everything afresh."""
        return RunConfig(budget=self.budget, population=self.population, seed=self.seed, fresh=True,
                         measurement=self.measurement, drop_recovery_steps=self.drop_recovery_steps)


FULL = Settings(quick=False, budget=256, population=32)
# Short rounds and few candidates: checks the wiring, says little about utilisation.
QUICK = Settings(quick=True, budget=16, population=8, drop_recovery_steps=5,
                 measurement={"warmup_runs": 2, "warmup_seconds": 0.01, "min_samples": 10, "min_seconds": 0.02,
                              "cooldown_seconds": 0.0, "noise_threshold": 1.0})


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables (Ray's processes, started inside, inherit them), then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _host_cores_restored() -> Iterator[None]:
    """A search keeps the host off the device's core (affinity and torch threads); give them back after."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if cores is not None:
            os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)


def read_trace(path: Path) -> list[dict]:
    """The device's protocol phases, one dict a span; empty if nothing was measured."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def phase_seconds(spans: list[dict], start: float, end: float) -> dict[str, float]:
    """Seconds each phase overlaps [start, end], summed over the device's spans."""
    totals = dict.fromkeys(PHASES, 0.0)
    for s in spans:
        totals[s["phase"]] += max(0.0, min(s["end"], end) - max(s["start"], start))
    return totals


def window_row(name: str, spans: list[dict], start: float, end: float) -> dict:
    """One window of the run: its wall time, the device's phases in it, the rest, and the timed fraction."""
    wall = max(end - start, 1e-9)
    phases = phase_seconds(spans, start, end)
    busy = sum(phases.values())
    return {"window": name, "wall_s": wall, **{f"{p}_s": phases[p] for p in PHASES},
            "not_measuring_s": wall - busy, "timed_fraction": phases["timed"] / wall, "busy_fraction": busy / wall}


def store_numbers(run_dir: Path) -> dict:
    """From the run's store: the kept measurements' timed seconds (device clock), accuracy work, loop bounds."""
    store = Store.open(run_dir)
    try:
        kept_s, kept, noise_repeats, drift_repeats = 0.0, 0, 0, 0
        for summary, blob in store.db.execute("SELECT latency, samples FROM latencies "
                                              "WHERE source = 'measured' AND latency IS NOT NULL"):
            latency = Latency.from_record(summary, blob)
            kept_s += sum(sum(r) for r in latency.samples_ms) * latency.inner_runs / 1e3
            kept += 1
            noise_repeats += latency.attempts - 1  # all rounds measured again: their medians disagreed
            drift_repeats += len(latency.reference_ms) > 2  # its batch measured again: the reference moved
        scored, accuracy_s = store.db.execute("SELECT COUNT(*), COALESCE(SUM(seconds), 0) FROM accuracies "
                                              "WHERE seconds IS NOT NULL").fetchone()
        loop_start = store.db.execute("SELECT MIN(created) FROM candidates").fetchone()[0]
        loop_end = store.db.execute("SELECT MAX(created) FROM generations").fetchone()[0]
        return {"counts": store.counts(), "kept_measurements": kept, "kept_timed_s": kept_s,
                "noise_repeats": noise_repeats, "drift_repeats": drift_repeats,
                "accuracies_scored": scored, "accuracy_s": accuracy_s, "loop_wall_clock": (loop_start, loop_end)}
    finally:
        store.close()


def search_once(settings: Settings, workdir: Path) -> dict:
    """The search, timed from start_run's call to its return, with the device's trace and the store's numbers."""
    trace = workdir / "trace.jsonl"
    with _environment(HILAS_LATENCY_DB=str(workdir / "latency.sqlite"), HILAS_DEVICES=str(workdir / "devices.toml"),
                      **{TRACE_ENV: str(trace)}), _host_cores_restored():
        to_monotonic = time.monotonic() - time.time()
        cpu, start = CpuTimes.now(), time.monotonic()
        start_run(settings.config(), workdir / "run")
        end, cpu_end = time.monotonic(), CpuTimes.now()
    numbers = store_numbers(workdir / "run")
    loop = [t + to_monotonic for t in numbers.pop("loop_wall_clock")]
    spans = read_trace(trace)
    if not spans:
        raise RuntimeError(f"utilisation: the device wrote no protocol trace to {trace}; its agent did not see "
                           f"${TRACE_ENV} (a Ray cluster joined through RAY_ADDRESS does not pass it on)")
    return {
        "windows": [window_row("whole run", spans, start, end),
                    window_row("before the search loop", spans, start, loop[0]),
                    window_row("search loop", spans, loop[0], loop[1])],
        "device_processes": len({s["pid"] for s in spans}),
        "trace_timed_s": phase_seconds(spans, start, end)["timed"],
        "rounds": sum(1 for s in spans if s["phase"] == "timed"),
        "machine_cpu_busy": cpu_end.shares_since(cpu)["machine_busy"],
        **numbers,
    }


def run(settings: Settings) -> dict:
    """Train (or load) the default model, then search once with a fresh latency database and trace."""
    if ray.is_initialized():
        raise RuntimeError(f"utilisation: Ray is already running in this process; the device's agent would not "
                           f"see ${TRACE_ENV}. Run the benchmark in a fresh process")
    before = machine()
    started = time.perf_counter()
    default_task()  # trains the default model on first use; not part of the search's time
    train_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="hilas-utilisation-") as tmp:
        search = search_once(settings, Path(tmp))
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.utilisation" + (" --quick" if settings.quick else ""),
        "machine": {**before, "load_average_after": machine()["load_average"]},
        "versions": versions(),
        "seed": settings.seed,
        "settings": asdict(settings),
        "device": "local-cpu (onnxruntime-cpu, 1 thread, pinned to the last core)",
        "default_model_s": round(train_s, 1),
        **search,
        "seconds": round(time.perf_counter() - started),
    }


def _s(seconds: float, wall: float) -> str:
    return f"{seconds:.1f} s ({seconds / wall:.0%})"


def render_markdown(result: dict) -> str:
    s, counts = result["settings"], result["counts"]
    whole, loop = result["windows"][0], result["windows"][2]
    protocol = ", ".join(f"`{k}` {val:g}" for k, val in s["measurement"].items())
    whose = "the demo's" if s["measurement"] == DEMO_MEASUREMENT else "a short"
    lines = [f"{measured_on(result)} Search: the embedded digits ResNet on {result['device']}, budget "
             f"{s['budget']}, population {s['population']}, seed {result['seed']}, {whose} protocol (the defaults "
             f"but {protocol}), "
             f"a fresh latency database: {counts['candidates']} candidates, {result['kept_measurements']} structures "
             f"measured.\n",
             "| window | wall | " + " | ".join(PHASE_NAMES[p] for p in PHASES) + " | not measuring | timed / wall |",
             "|---|---:|" + "---:|" * (len(PHASES) + 2)]
    for w in result["windows"]:
        cells = " | ".join(_s(w[f"{p}_s"], w["wall_s"]) for p in PHASES)
        lines.append(f"| {w['window']} | {w['wall_s']:.1f} s | {cells} | {_s(w['not_measuring_s'], w['wall_s'])} "
                     f"| **{w['timed_fraction']:.0%}** |")
    lines += ["", f"The device spent **{whole['timed_fraction']:.0%}** of the run's wall time in timed runs "
                  f"({loop['timed_fraction']:.0%} of the search loop's) and {whole['busy_fraction']:.0%} in any "
                  f"phase of the protocol. The kept measurements' samples add up to {result['kept_timed_s']:.1f} s "
                  f"by the device's clock; the other {result['trace_timed_s'] - result['kept_timed_s']:.1f} s of "
                  f"timed runs measured the drift reference (around every batch of 8), {result['noise_repeats']} "
                  f"repeats of a measurement's rounds because they disagreed (noise check) and the first pass of "
                  f"{result['drift_repeats']} measurements taken again because the reference moved (drift check). "
                  f"Meanwhile the host scored {result['accuracies_scored']} candidates' accuracy in "
                  f"{result['accuracy_s']:.1f} s ({result['accuracy_s'] / loop['wall_s']:.0%} of the search loop). "
                  f"The machine's {result['machine']['cores']} cores were {share(result['machine_cpu_busy'])} busy "
                  f"over the run (every process: this search's and others')."]
    return "\n".join(lines) + "\n"


def write_results(result: dict, results_dir: Path, readme: bool) -> str:
    """JSON and markdown under `results_dir`; the README's section too when `readme` (full runs only)."""
    markdown = render_markdown(result)
    stem = "utilisation" + ("-quick" if result["settings"]["quick"] else "")
    write_atomically(results_dir / f"{stem}.json", json.dumps(result, indent=2, default=str) + "\n")
    write_atomically(results_dir / f"{stem}.md", f"# Device utilisation during a search\n\n{markdown}")
    if readme:
        update_readme("utilisation", markdown)
    return markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.utilisation", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 candidates, short rounds: checks the wiring; "
                                                             "writes results but not the README")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    print(write_results(run(settings), RESULTS, readme=not settings.quick))


if __name__ == "__main__":
    main()
