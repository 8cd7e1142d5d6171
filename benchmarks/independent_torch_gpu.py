"""An independent CUDA timer: the baseline hilas's cuda agent is checked against.

It shares no timing code with hilas: it rebuilds the original torch model from its spec (with
`benchmarks.fidelity_models`, which imports only torch and the model's definition; run it with
PYTHONPATH at the repository root), folds BatchNorm into the convolutions with torch's own fx fuser (as the
ONNX export hilas measures does, so both run the same arithmetic), runs it on the GPU in eval mode with cuDNN
autotuning, warms up for a fixed time, then
times single forward passes with time.perf_counter between two torch.cuda.synchronize() calls.
That wall-clock time includes the kernel launches, which dominate small models on a GPU.

Usage: python independent_torch_gpu.py SPEC_JSON DEVICE_INDEX WARMUP_SECONDS SECONDS MIN_RUNS
Prints one JSON object on stdout.
"""

import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.fx.experimental.optimization import fuse

from benchmarks.fidelity_models import ModelSpec, build, example_input

USAGE = "usage: independent_torch_gpu.py SPEC_JSON DEVICE_INDEX WARMUP_SECONDS SECONDS MIN_RUNS"


def parse_args(argv: list[str]) -> tuple[ModelSpec, int, float, float, int]:
    if len(argv) != 5:
        sys.exit(f"{USAGE}\ngot {len(argv)} arguments")
    spec, index, warmup_s, seconds, min_runs = argv
    try:
        return ModelSpec(**json.loads(spec)), int(index), float(warmup_s), float(seconds), int(min_runs)
    except (ValueError, TypeError) as e:
        sys.exit(f"{USAGE}\nbad argument: {e}")


def time_runs(run: Callable[[], object], warmup_s: float, seconds: float, min_runs: int) -> list[float]:
    """Untimed runs for warmup_s, then the seconds of every single synchronised run until both minimums are met."""
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        run()
    torch.cuda.synchronize()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    spec, index, warmup_s, seconds, min_runs = parse_args(sys.argv[1:])
    if not torch.cuda.is_available():
        sys.exit("no CUDA device is visible to torch")
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda", index)
    model = fuse(build(spec).eval()).to(device)
    x = example_input(spec).to(device)
    with torch.inference_mode():
        times_ms = [t * 1e3 for t in time_runs(lambda: model(x), warmup_s, seconds, min_runs)]
    deciles = statistics.quantiles(times_ms, n=10, method="inclusive")  # as numpy.percentile
    print(json.dumps({
        "median_ms": statistics.median(times_ms),
        "p10_ms": deciles[0],
        "p90_ms": deciles[-1],
        "mean_ms": statistics.fmean(times_ms),
        "n": len(times_ms),
        "gpu": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }))


if __name__ == "__main__":
    main()
