"""devices: model artifact -> measured latency, on any number of devices at once."""

from .agent import DeviceAgent, DeviceUnavailable, MeasurementError
from .artifact import ModelArtifact, TensorSpec, export_onnx
from .drift import DriftCheckedAgent, reference_artifact
from .host import fingerprint
from .latency import HARNESS_VERSION, Latency, summarize
from .onnxruntime_cpu import OnnxRuntimeCpuAgent
from .pool import DevicePool, MeasurementResult
from .protocol import HostTimer, MeasurementProtocol, Timer, measure_rounds
from .registry import LOCAL_CPU, DeviceSpec, agent_class, make_agent
from .virtual import VirtualAgent

__all__ = [
    "HARNESS_VERSION",
    "LOCAL_CPU",
    "DeviceAgent",
    "DevicePool",
    "DeviceSpec",
    "DeviceUnavailable",
    "DriftCheckedAgent",
    "HostTimer",
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
    "make_agent",
    "measure_rounds",
    "reference_artifact",
    "summarize",
]
