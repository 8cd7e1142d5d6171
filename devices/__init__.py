"""devices: model artifact -> measured latency, on any number of devices at once.

The pool (and with it Ray) is imported on first use, so an agent can be used, and a GPU or a
board checked, on a machine that has no Ray installed.
"""

from .agent import DeviceAgent, DeviceUnavailable, MeasurementError
from .artifact import ModelArtifact, TensorSpec, example_inputs, export_onnx, input_specs
from .check import DeviceCheck, check_device
from .cuda import CudaAgent
from .database import LatencyDatabase
from .drift import DriftCheckedAgent, reference_artifact
from .host import fingerprint, host_fingerprint
from .latency import HARNESS_VERSION, Latency, summarize
from .onnxruntime_cpu import OnnxRuntimeCpuAgent
from .protocol import HostTimer, MeasurementProtocol, Timer, measure_rounds
from .registry import (LOCAL_CPU, DeviceRegistry, DeviceSpec, agent_class, make_agent, spec_from_table,
                       spec_to_table, validate_spec)
from .tvm_cpu import TvmCpuAgent
from .virtual import VirtualAgent

__all__ = [
    "HARNESS_VERSION",
    "LOCAL_CPU",
    "CudaAgent",
    "DeviceAgent",
    "DeviceCheck",
    "DeviceRegistry",
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
    "TvmCpuAgent",
    "VirtualAgent",
    "agent_class",
    "check_device",
    "example_inputs",
    "export_onnx",
    "fingerprint",
    "host_fingerprint",
    "input_specs",
    "make_agent",
    "measure_rounds",
    "reference_artifact",
    "spec_from_table",
    "spec_to_table",
    "summarize",
    "validate_spec",
]


def __getattr__(name: str):
    if name in ("DevicePool", "MeasurementResult"):
        from . import pool

        return getattr(pool, name)
    raise AttributeError(f"module 'devices' has no attribute {name!r}")
