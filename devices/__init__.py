"""devices: model artifact -> measured latency, on any number of devices at once.

The pool (and with it Ray) is imported on first use, so an agent can be used, and a GPU or a
board checked, on a machine that has no Ray installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hilas._lazy import lazy_names

if TYPE_CHECKING:
    from .agent import DeviceAgent, DeviceUnavailable, MeasurementError
    from .artifact import ModelArtifact, TensorSpec, example_inputs, export_onnx, input_specs
    from .check import DeviceCheck, check_device
    from .cuda import CudaAgent
    from .database import LatencyDatabase
    from .drift import DriftCheckedAgent, reference_artifact
    from .host import fingerprint, host_fingerprint
    from .latency import HARNESS_VERSION, Latency, summarize
    from .onnxruntime_cpu import OnnxRuntimeCpuAgent
    from .pool import DevicePool, MeasurementResult
    from .protocol import HostTimer, MeasurementProtocol, Timer, measure_rounds
    from .registry import (
        LOCAL_CPU,
        DeviceRegistry,
        DeviceSpec,
        agent_class,
        make_agent,
        spec_from_table,
        spec_to_table,
        validate_spec,
    )
    from .tvm_cpu import TvmCpuAgent
    from .virtual import VirtualAgent

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    ".agent": ["DeviceAgent", "DeviceUnavailable", "MeasurementError"],
    ".artifact": ["ModelArtifact", "TensorSpec", "example_inputs", "export_onnx", "input_specs"],
    ".check": ["DeviceCheck", "check_device"],
    ".cuda": ["CudaAgent"],
    ".database": ["LatencyDatabase"],
    ".drift": ["DriftCheckedAgent", "reference_artifact"],
    ".host": ["fingerprint", "host_fingerprint"],
    ".latency": ["HARNESS_VERSION", "Latency", "summarize"],
    ".onnxruntime_cpu": ["OnnxRuntimeCpuAgent"],
    ".pool": ["DevicePool", "MeasurementResult"],
    ".protocol": ["HostTimer", "MeasurementProtocol", "Timer", "measure_rounds"],
    ".registry": ["LOCAL_CPU", "DeviceRegistry", "DeviceSpec", "agent_class", "make_agent", "spec_from_table",
                  "spec_to_table", "validate_spec"],
    ".tvm_cpu": ["TvmCpuAgent"],
    ".virtual": ["VirtualAgent"],
})
