"""A simulated device: latency from a FLOP count of the ONNX graph.

For tests and for simulating many devices without hardware. The cost model is
deliberately simple (latency proportional to the multiply-accumulates of Conv,
Gemm and MatMul nodes) but it follows structure the way real latency does:
pruning filters or dropping blocks makes it faster. It is measured through the
same protocol as real devices, on a simulated clock, so warm-up, rounds and the
noise check behave as they would on hardware.
"""

from __future__ import annotations

import math
import time

import numpy as np
import onnx

from .agent import MeasurementError
from .artifact import ModelArtifact
from .latency import Latency
from .protocol import MeasurementProtocol, measure_rounds

COST_MODEL_VERSION = "1"  # bump when graph_mflops changes, so cached latencies are not reused


class VirtualAgent:
    kind = "virtual"

    def __init__(
        self, *, ms_per_mflop: float = 0.05, noise_cv: float = 0.0, delay_s: float = 0.0, seed: int = 0
    ) -> None:
        for name, value in (("ms_per_mflop", ms_per_mflop), ("noise_cv", noise_cv), ("delay_s", delay_s)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.ms_per_mflop = ms_per_mflop
        self.noise_cv = noise_cv
        self.delay_s = delay_s
        self.seed = seed

    def info(self) -> dict:
        return {
            "kind": self.kind,
            "device": {"simulated": True, "ms_per_mflop": self.ms_per_mflop, "noise_cv": self.noise_cv,
                       "seed": self.seed},
            "runtime": {"name": "virtual", "version": COST_MODEL_VERSION},
            "state": {"delay_s": self.delay_s},
        }

    def prepare(self) -> None:
        pass

    def measure(self, artifact: ModelArtifact, protocol: MeasurementProtocol) -> Latency:
        """The protocol run on a simulated clock whose runs take the cost model's time, with noise.

        Noise is seeded by the artifact's hash, so a given model gets the same
        samples whatever order the measurements run in.
        """
        try:
            mflops = graph_mflops(artifact.onnx)
        except Exception as e:
            why = f"virtual device could not read the ONNX graph of {artifact.structure_key}: {type(e).__name__}: {e}"
            raise MeasurementError("runtime", why) from e
        time.sleep(self.delay_s)
        rng = np.random.default_rng([self.seed, int(artifact.sha256[:15], 16)])
        clock = SimulatedClock(mflops * self.ms_per_mflop, self.noise_cv, rng)
        return measure_rounds(lambda: clock.run_once, protocol, f"virtual {COST_MODEL_VERSION}", timer=clock)

    def close(self) -> None:
        pass


class SimulatedClock:
    """A Timer on which every run takes `ms` milliseconds, times (1 + noise_cv * a normal draw)."""

    resolution_ms = 1e-6

    def __init__(self, ms: float, noise_cv: float, rng: np.random.Generator) -> None:
        self.ms, self.noise_cv, self.rng = ms, noise_cv, rng

    def run_once(self) -> None:
        """Nothing runs: the clock decides how long it took."""

    def time(self, run_once, inner: int) -> float:
        if not self.noise_cv:
            return self.ms * inner
        return float(np.clip(self.ms * (1.0 + self.noise_cv * self.rng.standard_normal(inner)), 0.0, None).sum())

    def sleep(self, seconds: float) -> None:
        """Simulated cooldowns take no time."""


def graph_mflops(onnx_bytes: bytes) -> float:
    """Millions of FLOPs (2 per multiply-accumulate) of the Conv, Gemm and MatMul nodes.

    Shapes come from ONNX shape inference; symbolic dimensions count as 0.
    """
    graph = onnx.shape_inference.infer_shapes(onnx.load_model_from_string(onnx_bytes), strict_mode=True).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        shapes.setdefault(value.name, tuple(d.dim_value for d in value.type.tensor_type.shape.dim))
    macs = 0
    for node in graph.node:
        if node.op_type == "Conv":  # each output element: Cin/groups * kh * kw
            per_output = math.prod(shapes[node.input[1]][1:])
        elif node.op_type in ("Gemm", "MatMul"):  # each output element: K
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            a_shape = shapes[node.input[0]]
            per_output = a_shape[-2] if trans_a else a_shape[-1]
        else:
            continue
        macs += math.prod(shapes[node.output[0]]) * per_output
    return 2 * macs / 1e6
