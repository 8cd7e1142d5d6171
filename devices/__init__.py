"""devices: model artifact -> measured latency, on any number of devices at once.

The pool (and with it Ray) is imported on first use, so an agent can be used, and a GPU or a
board checked, on a machine that has no Ray installed.
"""

from .agent import DeviceAgent, DeviceUnavailable, MeasurementError
from .artifact import ModelArtifact, TensorSpec, export_onnx, input_specs
from .cuda import CudaAgent
from .database import LatencyDatabase
from .drift import DriftCheckedAgent, reference_artifact
from .host import fingerprint
from .latency import HARNESS_VERSION, Latency, summarize
from .onnxruntime_cpu import OnnxRuntimeCpuAgent
from .protocol import HostTimer, MeasurementProtocol, Timer, measure_rounds
from .registry import LOCAL_CPU, DeviceSpec, agent_class, make_agent
from .virtual import VirtualAgent

__all__ = [
    "HARNESS_VERSION",
    "LOCAL_CPU",
    "CudaAgent",
    "DeviceAgent",
    "DevicePool",
    "DeviceSpec",
    "DeviceUnavailable",
    "DriftCheckedAgent",
    "HostTimer",
    "LatencyDatabase",
    "Latency",
    "MeasurementError",
    "MeasurementProtocol",
    "MeasurementResult",
    "ModelArtifact",
    "OnnxRuntimeCpuAgent",
    "TensorSpec",
    "Timer",
    "VirtualAgent",
    "agent_class",
    "export_onnx",
    "fingerprint",
    "input_specs",
    "make_agent",
    "measure_rounds",
    "reference_artifact",
    "summarize",
]


def __getattr__(name: str):
    if name in ("DevicePool", "MeasurementResult"):
        from . import pool

        return getattr(pool, name)
    raise AttributeError(f"module 'devices' has no attribute {name!r}")
