"""devices: model artifact -> measured latency, on any number of devices at once."""

from .agent import DeviceAgent, DeviceUnavailable, MeasurementError
from .artifact import ModelArtifact, TensorSpec, export_onnx
from .latency import Latency, summarize
from .onnxruntime_cpu import OnnxRuntimeCpuAgent
from .pool import DevicePool, MeasurementResult
from .protocol import MeasurementProtocol, measure_callable
from .registry import LOCAL_CPU, DeviceSpec, agent_class, make_agent
from .virtual import VirtualAgent

__all__ = [
    "LOCAL_CPU",
    "DeviceAgent",
    "DevicePool",
    "DeviceSpec",
    "DeviceUnavailable",
    "Latency",
    "MeasurementError",
    "MeasurementProtocol",
    "MeasurementResult",
    "ModelArtifact",
    "OnnxRuntimeCpuAgent",
    "TensorSpec",
    "VirtualAgent",
    "agent_class",
    "export_onnx",
    "make_agent",
    "measure_callable",
    "summarize",
]
