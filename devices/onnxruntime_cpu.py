"""Local CPU device: onnxruntime with pinned threads.

Pinned to one core by default (the machine's last), so the host's accuracy
work runs on the other cores without disturbing the timings.
"""

from __future__ import annotations

import os

import onnxruntime as ort

from .agent import DeviceUnavailable, MeasurementError
from .artifact import ModelArtifact, example_inputs, refuse_custom_ops
from .host import host_fingerprint, host_state
from .latency import Latency
from .protocol import MeasurementProtocol, measure_rounds

PROVIDERS = ["CPUExecutionProvider"]


class OnnxRuntimeCpuAgent:
    kind = "onnxruntime-cpu"

    def __init__(
        self, *, intra_op_threads: int = 1, inter_op_threads: int = 1, cpu_affinity: list[int] | None = None
    ) -> None:
        for name, value in (("intra_op_threads", intra_op_threads), ("inter_op_threads", inter_op_threads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if cpu_affinity is not None and (
            not cpu_affinity or not all(isinstance(c, int) and c >= 0 for c in cpu_affinity)
        ):
            raise ValueError(f"cpu_affinity must be a non-empty list of core numbers, got {cpu_affinity!r}")
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.cpu_affinity = cpu_affinity
        self._pinning = "not pinned: prepare() has not run"
        self._saved_affinity: set[int] | None = None

    def info(self) -> dict:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return {
            "kind": self.kind,
            "device": host_fingerprint(),
            "runtime": {
                "name": "onnxruntime",
                "version": ort.__version__,
                "providers": PROVIDERS,
                "intra_op_threads": self.intra_op_threads,
                "inter_op_threads": self.inter_op_threads,
                "execution_mode": "sequential",
                "graph_optimization_level": "all",
                "pinning": self._pinning,
                "cores": cores,
            },
            "state": host_state(),
        }

    def prepare(self) -> None:
        """Pin this thread (and the threads onnxruntime starts from it) to the chosen cores."""
        if not hasattr(os, "sched_setaffinity"):
            self._pinning = "not pinned: this platform has no os.sched_setaffinity"
            return
        allowed = os.sched_getaffinity(0)
        if self.cpu_affinity is None and len(allowed) == 1:
            self._pinning = "not pinned: only one core available"
            return
        cores = set(self.cpu_affinity) if self.cpu_affinity is not None else {max(allowed)}
        try:
            os.sched_setaffinity(0, cores)
        except OSError as e:
            raise DeviceUnavailable(
                f"onnxruntime-cpu: cannot pin to cores {sorted(cores)} ({e.strerror}); this process may use "
                f"cores {sorted(allowed)}: change the device's cpu_affinity option"
            ) from e
        self._saved_affinity = allowed
        self._pinning = "pinned"

    def measure(self, artifact: ModelArtifact, protocol: MeasurementProtocol) -> Latency:
        refuse_custom_ops(artifact, self.kind)
        runtime = f"onnxruntime {ort.__version__} ({PROVIDERS[0]})"
        feeds = example_inputs(artifact)

        def open_run():  # a fresh inference session per round
            session = ort.InferenceSession(artifact.onnx, self._session_options(), providers=PROVIDERS)
            return lambda: session.run(None, feeds)

        try:
            return measure_rounds(open_run, protocol, runtime)
        except MeasurementError:
            raise
        except Exception as e:
            raise MeasurementError(
                "runtime", f"onnxruntime could not run {artifact.structure_key}: {type(e).__name__}: {e}"
            ) from e

    def close(self) -> None:
        """Give the thread its cores back (matters when the agent runs in the caller's process)."""
        if self._saved_affinity is not None:
            os.sched_setaffinity(0, self._saved_affinity)
            self._saved_affinity = None
            self._pinning = "not pinned: closed"

    def _session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return options
