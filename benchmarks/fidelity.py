"""Latency fidelity: does hilas's measured latency agree with an independent harness, repeatably?

    python -m benchmarks.fidelity [--quick] [--repeats 5] [--device local-cpu|cuda] [--models A,B,...]

Each model is exported once, then measured `--repeats` times by a hilas device agent (in this
process, under the default MeasurementProtocol) and by a standalone timer that shares no code
with hilas (in a child process, on the same core or GPU). Each model is measured by both back to
back (taking turns going first), so slow drift of the machine reaches both alike. Results go to
benchmarks/results/ and, for a full run, into benchmarks/README.md. See benchmarks/README.md for what the columns mean.

Imports only what a bare GPU machine has (torch, onnx, onnxruntime, numpy): no Ray, pymoo,
scikit-learn, platformdirs, typer, rich or matplotlib.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from hilas import devices
from hilas.devices.host import cpu_model, host_state

from .fidelity_models import MODELS, QUICK_MODELS, ModelSpec, build, example_input
from .results_io import README, RESULTS, update_readme, write_atomically

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RATIO_TARGET = 0.05  # |hilas / independent - 1| at most this
CV_TARGET = 0.02  # std / mean of a model's repeated medians at most this
TABLE_HEAD = ("| model | hilas ms | independent ms | ratio | hilas repeat CV | independent repeat CV | verdict |",
              "|---|---:|---:|---:|---:|---:|---|")
INDEPENDENT_SCRIPTS = {"local-cpu": HERE / "independent_timer.py", "cuda": HERE / "independent_torch_gpu.py"}


@dataclass(frozen=True)
class Settings:
    """Everything that decides what a run measures and how; recorded with its results."""

    device: str
    quick: bool
    repeats: int
    models: tuple[ModelSpec, ...]
    protocol: devices.MeasurementProtocol
    independent_warmup_s: float
    independent_seconds: float
    independent_min_runs: int = 100

    @property
    def stem(self) -> str:
        """The results' file name: fidelity[-cuda][-quick]."""
        return "fidelity" + ("-cuda" if self.device == "cuda" else "") + ("-quick" if self.quick else "")


def make_settings(device: str, quick: bool, repeats: int | None, names: list[str] | None = None) -> Settings:
    """Full runs use the default protocol; quick runs a short one on four models, to check the wiring.

    `names` picks some of the models (e.g. where device time is scarce); the table lists those measured.
    """
    models = QUICK_MODELS if quick else MODELS
    if names:
        known = {m.name: m for m in MODELS}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"fidelity: unknown models {unknown}; known: {', '.join(known)}")
        models = tuple(known[n] for n in names)
    if quick:
        return Settings(device, True, repeats or 2, models,
                        devices.MeasurementProtocol(warmup_seconds=0.2, min_seconds=0.2), 0.5, 1.0)
    return Settings(device, False, repeats or 5, models, devices.MeasurementProtocol(), 2.0, 3.0)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def export_models(models: tuple[ModelSpec, ...], folder: Path) -> dict[str, tuple[devices.ModelArtifact, Path]]:
    """Each model's artifact (for hilas) and its ONNX file (for the independent CPU timer)."""
    exported = {}
    for spec in models:
        artifact = devices.export_onnx(build(spec), example_input(spec), spec.name)
        path = folder / f"{spec.name}.onnx"
        path.write_bytes(artifact.onnx)
        exported[spec.name] = (artifact, path)
    return exported


def make_agent(device: str) -> devices.DeviceAgent:
    """The hilas agent under test, made (not yet prepared) before the slow export, so a missing one fails fast."""
    if device == "local-cpu":
        return devices.OnnxRuntimeCpuAgent()
    try:
        from hilas.devices.cuda import CudaAgent
    except ImportError as e:
        raise SystemExit(f"fidelity: cannot load the cuda agent: {e}") from e
    return CudaAgent(runtime="torch")


def prepare(agent: devices.DeviceAgent, device: str) -> None:
    """Set the agent up (the CPU agent pins this thread, and so the child processes, to the last core)."""
    try:
        agent.prepare()
    except devices.DeviceUnavailable as e:
        raise SystemExit(f"fidelity: device {device} is unavailable: {e}") from e


def pinned_core() -> int:
    """The one core this thread (and so the hilas CPU agent) runs on: the independent timer uses it too."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) != 1:
        raise SystemExit(f"fidelity: expected the onnxruntime-cpu agent to pin this thread to one core, got {cores}")
    return cores[0]


def independent_argv(settings: Settings, spec: ModelSpec, onnx_path: Path, placement: int) -> list[str]:
    """The child process's command: the model (an ONNX file or, for the GPU, its spec) and where to run."""
    model = json.dumps(spec.to_dict()) if settings.device == "cuda" else str(onnx_path)
    return [sys.executable, str(INDEPENDENT_SCRIPTS[settings.device]), model, str(placement),
            str(settings.independent_warmup_s), str(settings.independent_seconds), str(settings.independent_min_runs)]


def measure_independent(argv: list[str], timeout_s: float) -> dict:
    """The independent timer's JSON result, or {"error": ...} when it fails (reported, never hidden)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": "timeout", "message": f"the independent timer ran past {timeout_s:.0f} s"}
    if done.returncode != 0:
        return {"error": "exit", "message": f"exit status {done.returncode}: {done.stderr.strip()[-500:]}"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": "output", "message": f"no JSON on stdout: {done.stdout.strip()[-500:]!r}"}


def measure_hilas(agent: devices.DeviceAgent, artifact: devices.ModelArtifact,
                  protocol: devices.MeasurementProtocol) -> dict:
    """The agent's Latency as a dict (raw samples left out), or the MeasurementError that stopped it."""
    try:
        return agent.measure(artifact, protocol).to_dict(samples=False)
    except devices.MeasurementError as e:
        evidence = {"evidence": e.latency.to_dict(samples=False)} if e.latency else {}
        return {"error": e.failure, "message": e.message, **evidence}


def run_repeats(settings: Settings, agent: devices.DeviceAgent,
                exported: dict[str, tuple[devices.ModelArtifact, Path]], placement: int) -> dict[str, dict]:
    """Every model once per repeat; hilas and the independent timer take turns going first."""
    runs = {spec.name: {"hilas": [], "independent": []} for spec in settings.models}
    for repeat in range(settings.repeats):
        for spec in settings.models:
            artifact, onnx_path = exported[spec.name]
            argv = independent_argv(settings, spec, onnx_path, placement)
            hilas, independent = measure_pair(settings, agent, artifact, argv, hilas_first=repeat % 2 == 0)
            runs[spec.name]["hilas"].append(hilas)
            runs[spec.name]["independent"].append(independent)
            progress(f"[repeat {repeat + 1}/{settings.repeats}] {spec.name}: hilas {_short(hilas)}, "
                     f"independent {_short(independent)}")
    return runs


def measure_pair(settings: Settings, agent: devices.DeviceAgent, artifact: devices.ModelArtifact,
                 argv: list[str], hilas_first: bool) -> tuple[dict, dict]:
    """One measurement by each harness, back to back, in the order given; returns (hilas, independent)."""
    timeout_s = 60 + 10 * (settings.independent_warmup_s + settings.independent_seconds)
    if hilas_first:
        hilas = measure_hilas(agent, artifact, settings.protocol)
        return hilas, measure_independent(argv, timeout_s)
    independent = measure_independent(argv, timeout_s)
    return measure_hilas(agent, artifact, settings.protocol), independent


def _short(result: dict) -> str:
    if "median_ms" in result:
        return f"{result['median_ms']:.4g} ms"
    return f"{result['error']} error ({result['message']})"


def repeat_stats(results: list[dict]) -> dict:
    """Median and CV (population std / mean) of the repeats' medians; failed repeats are counted, not used."""
    medians = np.array([r["median_ms"] for r in results if "median_ms" in r])
    errors = [r["error"] for r in results if "error" in r]  # the kinds; the messages stay in "runs"
    return {
        "median_ms": float(np.median(medians)) if medians.size else None,
        "repeat_cv": float(medians.std() / medians.mean()) if medians.size >= 2 else None,
        "repeat_medians_ms": medians.tolist(),
        "errors": errors,
    }


def compare(spec: ModelSpec, artifact: devices.ModelArtifact, runs: dict) -> dict:
    """One model's verdict against both targets, with every repeat's result kept as evidence."""
    hilas, independent = repeat_stats(runs["hilas"]), repeat_stats(runs["independent"])
    ratio = (hilas["median_ms"] / independent["median_ms"]
             if hilas["median_ms"] is not None and independent["median_ms"] is not None else None)
    return {
        "model": spec.name,
        "spec": spec.to_dict(),
        "input_shape": list(spec.input_shape),
        "onnx_sha256": artifact.sha256,
        "hilas": hilas,
        "independent": independent,
        "ratio": ratio,
        "within_ratio_target": ratio is not None and abs(ratio - 1) <= RATIO_TARGET,
        "within_cv_target": not hilas["errors"] and hilas["repeat_cv"] is not None and hilas["repeat_cv"] <= CV_TARGET,
        "runs": runs,
    }


def verdict(model: dict, repeats: int) -> str:
    """'ok', or every way the model missed, with by how much."""
    problems = []
    for side in ("hilas", "independent"):
        if model[side]["errors"]:
            kinds = sorted(set(model[side]["errors"]))
            problems.append(f"{side} failed {len(model[side]['errors'])} of {repeats} ({', '.join(kinds)})")
    if model["ratio"] is not None and not model["within_ratio_target"]:
        problems.append(f"ratio off by {(model['ratio'] - 1) * 100:+.1f} %")
    cv = model["hilas"]["repeat_cv"]
    if cv is not None and cv > CV_TARGET:
        problems.append(f"CV {_pct(cv, 1)} > {_pct(CV_TARGET, 0)}")
    return "miss: " + "; ".join(problems) if problems else "ok"


def machine(device: str) -> dict:
    """The host and the library versions, so a result can be traced to where it came from."""
    info = {"cpu_model": cpu_model(), "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "onnxruntime": ort.__version__, "torch": torch.__version__,
            "numpy": np.__version__}
    if device == "cuda":
        info["torch_cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device visible"
    return info


def run(settings: Settings) -> dict:
    """Export, measure, compare; returns everything the JSON file holds."""
    started, t0 = datetime.now().astimezone(), time.monotonic()
    state_before = host_state()
    agent = make_agent(settings.device)
    with tempfile.TemporaryDirectory(prefix="hilas-fidelity-") as folder:
        progress(f"exporting {len(settings.models)} models")
        exported = export_models(settings.models, Path(folder))
        prepare(agent, settings.device)
        try:
            placement = pinned_core() if settings.device == "local-cpu" else 0
            agent_info = agent.info()
            runs = run_repeats(settings, agent, exported, placement)
        finally:
            agent.close()
    models = [compare(spec, exported[spec.name][0], runs[spec.name]) for spec in settings.models]
    return {
        "benchmark": "latency fidelity",
        "command": shlex.join(sys.orig_argv),
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t0, 1),
        "device": settings.device,
        "quick": settings.quick,
        "repeats": settings.repeats,
        "protocol": settings.protocol.to_dict(),
        "independent_harness": {"script": INDEPENDENT_SCRIPTS[settings.device].name,
                                "placement": placement, "warmup_seconds": settings.independent_warmup_s,
                                "seconds": settings.independent_seconds,
                                "min_runs": settings.independent_min_runs},
        "targets": {"ratio": RATIO_TARGET, "repeat_cv": CV_TARGET},
        "machine": machine(settings.device),
        "agent_info": agent_info,
        "host_state": {"before": state_before, "after": host_state()},
        "summary": summary(models),
        "models": models,
    }


def summary(models: list[dict]) -> dict:
    return {"models": len(models),
            "within_ratio_target": sum(m["within_ratio_target"] for m in models),
            "within_cv_target": sum(m["within_cv_target"] for m in models)}


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def render_markdown(result: dict) -> str:
    """The table and the totals, as they appear in the .md file and in benchmarks/README.md."""
    rows = [_row(model, result["repeats"]) for model in result["models"]]
    return "\n".join([*_header(result), "", *TABLE_HEAD, *rows, "", _totals(result["summary"])]) + "\n"


def _header(result: dict) -> list[str]:
    m, p, ind = result["machine"], result["protocol"], result["independent_harness"]
    runtime = result["agent_info"].get("runtime", {})
    gpu = f", {m['gpu']}" if "gpu" in m else ""
    if result["device"] == "cuda":
        placement = f"{runtime.get('name')} {runtime.get('version')}, timed with {runtime.get('timer')}"
    else:
        placement = f"{runtime.get('pinning', 'see JSON')}, cores {runtime.get('cores', 'see JSON')}"
    return [
        f"Measured {result['started']} on {m['cpu_model']} ({m['cores']} cores){gpu}, {m['os']}, Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}, torch {m['torch']}; hilas agent `{result['agent_info'].get('kind')}` "
        f"({placement}).",
        "",
        f"Command: `{result['command']}` ({result['duration_s']:.0f} s). {result['repeats']} repeats; hilas protocol: "
        f"{p['rounds']} rounds, warm-up ≥{p['warmup_runs']} runs and ≥{p['warmup_seconds']:g} s, "
        f"≥{p['min_samples']} samples and ≥{p['min_seconds']:g} s per round; independent timer: "
        f"{ind['warmup_seconds']:g} s warm-up, {ind['seconds']:g} s of single runs (≥{ind['min_runs']}).",
    ]


def _row(model: dict, repeats: int) -> str:
    ratio = "–" if model["ratio"] is None else f"{model['ratio']:.3f}"
    return (f"| {model['model']} | {_ms(model['hilas']['median_ms'])} | {_ms(model['independent']['median_ms'])} | "
            f"{ratio} | {_pct(model['hilas']['repeat_cv'])} | {_pct(model['independent']['repeat_cv'])} | "
            f"{verdict(model, repeats)} |")


def _totals(summary: dict) -> str:
    n = summary["models"]
    return (f"Within {_pct(RATIO_TARGET, 0)} of the independent harness: **{summary['within_ratio_target']} of {n}** "
            f"models. Repeat CV at most {_pct(CV_TARGET, 0)}: **{summary['within_cv_target']} of {n}** models.")


def save(settings: Settings, result: dict) -> list[Path]:
    """The JSON and markdown files, and for a full run the README section; returns what was written."""
    RESULTS.mkdir(exist_ok=True)
    markdown = render_markdown(result)
    json_path, md_path = RESULTS / f"{settings.stem}.json", RESULTS / f"{settings.stem}.md"
    write_atomically(json_path, json.dumps(result, indent=2) + "\n")
    write_atomically(md_path, f"# Latency fidelity on {settings.device}{' (quick)' if settings.quick else ''}\n\n"
                              f"{markdown}")
    written = [json_path, md_path]
    if not settings.quick:
        update_readme(f"fidelity:{settings.device}", markdown)
        written.append(README)
    return written


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="4 models, 2 repeats, a short protocol (about 30 s): checks the wiring")
    parser.add_argument("--repeats", type=int, help="independent measurements per model (default 5, quick 2)")
    parser.add_argument("--device", choices=sorted(INDEPENDENT_SCRIPTS), default="local-cpu")
    parser.add_argument("--models", help="comma-separated model names to measure (default: all, or quick's four)")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 2:
        parser.error("--repeats must be at least 2 (a repeat CV needs two medians)")
    return make_settings(args.device, args.quick, args.repeats, args.models.split(",") if args.models else None)


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    result = run(settings)
    print(render_markdown(result))
    for path in save(settings, result):
        progress(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
