"""Scaling: evaluations per second of a DevicePool with 1 to 32 `virtual` devices on a local Ray cluster.

    python -m benchmarks.scaling [--quick]

For each device count N, a DevicePool starts N `virtual` devices (one Ray actor each) and every device
measures the same fixed set of artifacts, as in a search, where each structure is measured on every
device. A measurement holds its device for `delay_s` of wall time (a stand-in for a real device's
compile, load and timed runs: the virtual kind's simulated clock itself takes no time), then runs the
default measurement protocol on the simulated clock, between drift references, as any device does.
Two series: slow devices (0.5 s a measurement, about what the demo's protocol takes on local-cpu) and
fast ones (0.05 s), where the host's share of each measurement matters more. The rate is measurements
finished per second of wall time, from the first submit to the last result; the ideal line is N times
the rate of one device. The CPU time of this process tree (the driver, Ray's daemons and the actors)
during each window shows where the host becomes the bottleneck. Results go to
benchmarks/results/scaling[-quick].{json,md,png} and, for a full run, into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import ray
import torch

from hilas import devices
from hilas.devices.virtual import graph_mflops
from hilas.evaluators.default import DigitsResNet

from .machine import CpuTimes, cores, machine, measured_on, share, versions
from .results_io import RESULTS, update_readme, write_atomically

SEED = 0
# Stage widths of the digits ResNet: 32 structures of 2 to 40 MFLOPs (2 to 40 ms a run on the simulated clock).
WIDTHS = [(a, b) for a in (16, 24, 32, 40, 48, 56, 64, 72) for b in (32, 64, 96, 128)]
PROTOCOL = devices.MeasurementProtocol()  # the default protocol, on the simulated clock
START_TIMEOUT_S = 300.0  # 32 actors importing onnx and onnxruntime on 2 cores start slowly
EFFICIENT = 0.9  # the verdict's line: a rate below this share of the ideal one is called out


@dataclass(frozen=True)
class Settings:
    """What a run measures; recorded with its results."""

    quick: bool
    counts: tuple[int, ...]
    artifacts: int
    delays_s: tuple[float, ...]  # one series of device counts for each
    ms_per_mflop: float = 1.0
    noise_cv: float = 0.01

    def device_options(self, index: int, delay_s: float) -> dict:
        """Device `index`'s options: the same cost model everywhere, its own noise seed."""
        return {"ms_per_mflop": self.ms_per_mflop, "noise_cv": self.noise_cv, "delay_s": delay_s,
                "seed": SEED + index}


FULL = Settings(quick=False, counts=(1, 2, 4, 8, 16, 32), artifacts=32, delays_s=(0.5, 0.05))
QUICK = Settings(quick=True, counts=(1, 2, 4), artifacts=8, delays_s=(0.1, 0.02))


def make_artifacts(count: int) -> list[devices.ModelArtifact]:
    """`count` distinct structures of the digits ResNet (weights seeded; the cost model reads only shapes)."""
    torch.manual_seed(SEED)
    example = torch.zeros(1, 1, 8, 8)
    return [devices.export_onnx(DigitsResNet(widths=w).eval(), example, f"digits-{w[0]}-{w[1]}")
            for w in WIDTHS[:count]]


def drain(pool: devices.DevicePool, timeout_s: float, what: str) -> list[devices.MeasurementResult]:
    """Every outstanding result; raises instead of hanging when they do not all come within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    results: list[devices.MeasurementResult] = []
    while pool.pending():
        if time.monotonic() >= deadline:
            raise RuntimeError(f"scaling: {pool.pending()} measurements on {what} were still pending after "
                               f"{timeout_s:g} s; the machine may be overloaded, or a device is stuck "
                               f"(broken: {pool.broken() or 'none'})")
        results += pool.poll(timeout=1.0)
    return results


def measure_pool(settings: Settings, n: int, delay_s: float, artifacts: list[devices.ModelArtifact]) -> dict:
    """One device count: start the pool (not timed), then time every device measuring every artifact."""
    specs = [devices.DeviceSpec(f"virtual-{i}", "virtual", settings.device_options(i, delay_s)) for i in range(n)]
    what = f"{n} virtual devices ({delay_s:g} s a measurement)"
    # Generous: the device time a device needs, as if the host made it ten times longer, and two minutes more.
    timeout_s = 120.0 + 10 * len(artifacts) * delay_s
    with devices.DevicePool(specs, PROTOCOL, start_timeout_s=START_TIMEOUT_S) as pool:
        started = time.monotonic()
        pool.start()
        start_s = time.monotonic() - started
        cpu, driver_cpu = CpuTimes.now(), time.process_time()
        for spec in specs:
            for artifact in artifacts:
                pool.submit(spec.name, artifact)
        results = drain(pool, timeout_s, what)
        end = CpuTimes.now()
        driver_s = time.process_time() - driver_cpu
    return _row(n, delay_s, len(artifacts), results, start_s, end.at - cpu.at, end.shares_since(cpu), driver_s)


def _row(n: int, delay_s: float, artifacts: int, results: list[devices.MeasurementResult], start_s: float,
         seconds: float, shares: dict[str, float | None], driver_s: float) -> dict:
    failed = [r for r in results if r.error is not None]
    measured = len(results) - len(failed)
    n_cores = os.cpu_count() or 1
    hilas_cores = shares["ours"] * n_cores if shares["ours"] is not None else None
    row = {"delay_s": delay_s, "devices": n, "artifacts_per_device": artifacts, "measured": measured,
           "failed": len(failed), "errors": sorted({str(r.error) for r in failed})[:3], "start_s": round(start_s, 2),
           "seconds": round(seconds, 3), "rate": measured / seconds, "hilas_cores": hilas_cores,
           "cpu_ms_per_measurement": hilas_cores * seconds / measured * 1e3 if hilas_cores and measured else None,
           "driver_cores": driver_s / seconds, "machine_cpu_busy": shares["machine_busy"]}
    print(f"{delay_s:g} s, {n:>2} devices: {measured} measurements in {seconds:.1f} s = {row['rate']:.2f}/s "
          f"(started in {start_s:.1f} s; hilas used {cores(hilas_cores)} of {n_cores} cores, the machine was "
          f"{share(shares['machine_busy'])} busy)", flush=True)
    return row


def with_ideal(rows: list[dict]) -> list[dict]:
    """Each row with the ideal rate (N times one device's, in its series) and the efficiency against it."""
    one = {r["delay_s"]: r["rate"] for r in rows if r["devices"] == 1}
    return [{**r, "ideal": r["devices"] * one[r["delay_s"]],
             "efficiency": r["rate"] / (r["devices"] * one[r["delay_s"]])} for r in rows]


def run(settings: Settings) -> dict:
    """Every series and device count in turn on one local Ray instance (started here unless one is running)."""
    started = time.perf_counter()
    before = machine()
    artifacts = make_artifacts(settings.artifacts)
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    try:
        rows = [measure_pool(settings, n, delay_s, artifacts) for delay_s in settings.delays_s
                for n in settings.counts]
    finally:
        if owns_ray:
            ray.shutdown()
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.scaling" + (" --quick" if settings.quick else ""),
        "machine": {**before, "load_average_after": machine()["load_average"]},
        "versions": versions(),
        "seed": SEED,
        "settings": asdict(settings),
        "protocol": PROTOCOL.to_dict(),
        "artifacts": [{"structure_key": a.structure_key, "mflops": round(graph_mflops(a.onnx), 2)} for a in artifacts],
        "rows": with_ideal(rows),
        "seconds": round(time.perf_counter() - started),
    }


def render_markdown(result: dict, plot: str | None = None) -> str:
    """The section: settings, one table per series, the verdict and where the host limits; `plot` links a PNG."""
    s = result["settings"]
    lines = [f"{measured_on(result)} Each virtual device holds its device for `delay_s` of wall time a measurement, "
             f"then runs the default protocol on its simulated clock (`ms_per_mflop` {s['ms_per_mflop']:g}, "
             f"`noise_cv` {s['noise_cv']:g}, seed {result['seed']} + its index); every device measures the same "
             f"{s['artifacts']} structures."]
    for delay_s in s["delays_s"]:
        lines += ["", *_series(result, [r for r in result["rows"] if r["delay_s"] == delay_s])]
    if plot:
        lines += ["", f"![evaluations per second against devices, with the ideal line]({plot})"]
    return "\n".join(lines) + "\n"


def _series(result: dict, rows: list[dict]) -> list[str]:
    delay_s = rows[0]["delay_s"]
    lines = [f"`delay_s` = {delay_s:g} s (at most {1 / delay_s:g} measurements a second a device, less the drift "
             f"references between batches):", "",
             "| devices | measurements | seconds | evaluations/s | ideal/s | efficiency | hilas cores | "
             "CPU ms / measurement | driver cores | machine busy | start s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        per = f"{r['cpu_ms_per_measurement']:.1f}" if r["cpu_ms_per_measurement"] is not None else "?"
        lines.append(f"| {r['devices']} | {r['measured']}{failed} | {r['seconds']:.1f} | {r['rate']:.2f} | "
                     f"{r['ideal']:.2f} | **{r['efficiency']:.0%}** | {cores(r['hilas_cores'])} | {per} | "
                     f"{cores(r['driver_cores'])} | {share(r['machine_cpu_busy'])} | {r['start_s']:.1f} |")
    below = [r["devices"] for r in rows if r["efficiency"] < EFFICIENT]
    verdict = (f"**Below {EFFICIENT:.0%} of the ideal line from {below[0]} devices on.**" if below
               else f"Within {EFFICIENT:.0%} of the ideal line at every device count measured.")
    last = rows[-1]
    if last["cpu_ms_per_measurement"]:
        n_cores = result["machine"]["cores"]
        ceiling = n_cores / last["cpu_ms_per_measurement"] * 1e3
        verdict += (f" At {last['devices']} devices hilas kept {cores(last['hilas_cores'])} of {n_cores} cores "
                    f"busy, {last['cpu_ms_per_measurement']:.1f} ms of CPU a measurement: {n_cores} cores "
                    f"cannot serve more than about {ceiling:.0f} measurements a second.")
    return [*lines, "", verdict]


def write_plot(result: dict, path: Path) -> None:
    """Evaluations per second against devices, measured and ideal, one colour per series (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for delay_s, colour in zip(result["settings"]["delays_s"], ("tab:blue", "tab:orange", "tab:green")):
        rows = [r for r in result["rows"] if r["delay_s"] == delay_s]
        n = [r["devices"] for r in rows]
        ax.plot(n, [r["rate"] for r in rows], "o-", color=colour, label=f"measured, {delay_s:g} s a measurement")
        ax.plot(n, [r["ideal"] for r in rows], "--", color=colour, alpha=0.6, label=f"ideal, {delay_s:g} s")
    ax.set(xscale="log", yscale="log", xlabel="virtual devices", ylabel="evaluations per second",
           title=f"DevicePool scaling on {result['machine']['cores']} cores")
    ax.set_xticks(result["settings"]["counts"], [str(c) for c in result["settings"]["counts"]])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write_results(result: dict, results_dir: Path, readme: bool) -> str:
    """JSON, markdown and the plot under `results_dir`; the README's section too when `readme` (full runs)."""
    stem = "scaling" + ("-quick" if result["settings"]["quick"] else "")
    write_plot(result, results_dir / f"{stem}.png")
    markdown = render_markdown(result, plot=f"{stem}.png")
    write_atomically(results_dir / f"{stem}.json", json.dumps(result, indent=2, default=str) + "\n")
    write_atomically(results_dir / f"{stem}.md", f"# Scaling over virtual devices\n\n{markdown}")
    if readme:
        update_readme("scaling", render_markdown(result, plot=f"results/{stem}.png"))
    return markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1, 2 and 4 devices, 8 structures, short "
                                                             "measurements: checks the wiring; writes results "
                                                             "but not the README")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    print(write_results(run(settings), RESULTS, readme=not settings.quick))


if __name__ == "__main__":
    main()
