"""An independent onnxruntime CPU timer: the baseline hilas's latency is checked against.

It shares no code with hilas (it imports only onnxruntime, numpy and the standard library), so a
bug in hilas's protocol, timer or statistics cannot hide by being in both. It is deliberately
plain: pin to one core, build a session with the options hilas's onnxruntime-cpu agent uses,
warm up for a fixed time, then time single runs with time.perf_counter and print the median.

Usage: python independent_timer.py MODEL.onnx CORE WARMUP_SECONDS SECONDS MIN_RUNS
Prints one JSON object on stdout.
"""

import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

USAGE = "usage: independent_timer.py MODEL.onnx CORE WARMUP_SECONDS SECONDS MIN_RUNS"


def parse_args(argv: list[str]) -> tuple[str, int, float, float, int]:
    if len(argv) != 5:
        sys.exit(f"{USAGE}\ngot {len(argv)} arguments")
    path, core, warmup_s, seconds, min_runs = argv
    try:
        return path, int(core), float(warmup_s), float(seconds), int(min_runs)
    except ValueError as e:
        sys.exit(f"{USAGE}\nbad argument: {e}")


def open_session(path: str) -> ort.InferenceSession:
    """One intra-op and one inter-op thread, sequential, all graph optimisations, CPU only."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def random_feeds(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    """Random float32 inputs of the shapes the model declares (they must be fixed)."""
    rng = np.random.default_rng(12345)
    feeds = {}
    for spec in session.get_inputs():
        if spec.type != "tensor(float)" or not all(isinstance(d, int) for d in spec.shape):
            sys.exit(f"input {spec.name!r} is {spec.type} of shape {spec.shape}: only fixed-shape float32 inputs")
        feeds[spec.name] = rng.standard_normal(spec.shape).astype(np.float32)
    return feeds


def time_runs(run: Callable[[], object], warmup_s: float, seconds: float, min_runs: int) -> list[float]:
    """Untimed runs for warmup_s, then the seconds of every single run until both minimums are met."""
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        run()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    path, core, warmup_s, seconds, min_runs = parse_args(sys.argv[1:])
    os.sched_setaffinity(0, {core})  # before the session starts its threads, so they inherit it
    session = open_session(path)
    feeds = random_feeds(session)
    times_ms = np.asarray(time_runs(lambda: session.run(None, feeds), warmup_s, seconds, min_runs)) * 1e3
    p10, p90 = np.percentile(times_ms, [10, 90])
    print(json.dumps({
        "median_ms": float(np.median(times_ms)),
        "p10_ms": float(p10),
        "p90_ms": float(p90),
        "mean_ms": float(times_ms.mean()),
        "n": int(times_ms.size),
        "cores": sorted(os.sched_getaffinity(0)),
        "onnxruntime": ort.__version__,
    }))


if __name__ == "__main__":
    main()
