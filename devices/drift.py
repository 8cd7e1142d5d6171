"""Drift checks: a fixed reference model measured before and after each batch of measurements.

A device that slows down while it works (thermal throttling, another job arriving) makes every
measurement in between look slower than it is. Measuring the same reference model before and
after a batch shows it: when the reference moved by more than `drift_threshold`, the batch is
measured once more between fresh references, and the drift is recorded on every result.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import lru_cache

import numpy as np

from .agent import DeviceAgent, DeviceUnavailable, MeasurementError
from .artifact import OPSET, ModelArtifact, TensorSpec
from .latency import HARNESS_VERSION, Latency
from .protocol import MeasurementProtocol

REFERENCE_ARCH_KEY = "hilas-reference-v1"
# A reference measured this recently (at the end of the previous batch) also opens the next one.
REFERENCE_REUSE_S = 10.0


@lru_cache(maxsize=1)
def reference_artifact() -> ModelArtifact:
    """A small fixed CNN (two 3x3 convolutions at 32x32, pooling, a classifier), built without torch.

    The same bytes on every host and every run, so its latency on a device is comparable over time. onnx is
    imported here, when the reference is first built, not with the module.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], **conv),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **conv),
            helper.make_node("Relu", ["c2"], ["r2"]),
            helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1),
        ],
        "hilas_reference",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        [weight("w1", 16, 3, 3, 3), weight("b1", 16), weight("w2", 16, 16, 3, 3), weight("b2", 16),
         weight("w3", 10, 16), weight("b3", 10)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hilas")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return ModelArtifact(REFERENCE_ARCH_KEY, model.SerializeToString(), (TensorSpec("input", (1, 3, 32, 32)),))


def measure_one(agent: DeviceAgent, artifact: ModelArtifact,
                protocol: MeasurementProtocol) -> Latency | MeasurementError:
    """The agent's measurement, or the error that stopped it (a result, not raised); DeviceUnavailable is raised."""
    try:
        return agent.measure(artifact, protocol)
    except MeasurementError as e:
        return e
    except DeviceUnavailable:
        raise  # not this model's failure: the device is gone
    except Exception as e:
        return MeasurementError("runtime", f"the agent failed on {artifact.structure_key}: {type(e).__name__}: {e}")


class DriftCheckedAgent:
    """Runs batches on one agent between measurements of the reference model."""

    def __init__(self, agent: DeviceAgent, reference: ModelArtifact | None = None) -> None:
        self.agent = agent
        self.reference = reference or reference_artifact()
        self._last: tuple[float, float] | None = None  # (median ms, time.monotonic() when measured)
        self.reference_error: str | None = None  # why the reference could not be measured, if it could not

    def measure_batch(self, artifacts: list[ModelArtifact],
                      protocol: MeasurementProtocol) -> list[Latency | MeasurementError | DeviceUnavailable]:
        """One result per artifact, in order; each Latency carries the protocol, harness and drift seen.

        When the device is lost midway, what was measured is kept and every artifact not measured
        gets the DeviceUnavailable, so the caller can stop sending this device work.
        """
        results: list[Latency | MeasurementError] = []
        references: list[float | None] = []
        lost: DeviceUnavailable | None = None
        try:
            references.append(self._reference(protocol, reuse=True))
            for a in artifacts:
                results.append(measure_one(self.agent, a, protocol))
            references.append(self._reference(protocol))
            if _drift(*references) > protocol.drift_threshold:
                repeated = [measure_one(self.agent, a, protocol) for a in artifacts]
                references.append(self._reference(protocol))
                results = repeated
        except DeviceUnavailable as e:
            lost = e
        seen = tuple(r for r in references if r is not None)
        drift = _drift(*references[-2:]) if len(references) >= 2 else None
        stamped = [_stamped(r, protocol, seen, drift if seen else None) for r in results]
        return stamped + [lost] * (len(artifacts) - len(stamped))

    def _reference(self, protocol: MeasurementProtocol, reuse: bool = False) -> float | None:
        if reuse and self._last and time.monotonic() - self._last[1] < REFERENCE_REUSE_S:
            return self._last[0]
        result = measure_one(self.agent, self.reference, protocol.for_reference())
        if isinstance(result, MeasurementError):
            self.reference_error = str(result)
            self._last = None
            return None
        self._last = (result.median_ms, time.monotonic())
        return result.median_ms


def _drift(before: float | None, after: float | None) -> float:
    """Relative change of the reference's median; 0 when either end is missing."""
    if not before or after is None:
        return 0.0
    return abs(after - before) / before


def _stamped(result: Latency | MeasurementError, protocol: MeasurementProtocol, references: tuple[float, ...],
             drift: float | None) -> Latency | MeasurementError:
    if isinstance(result, MeasurementError):
        return result
    return replace(result, protocol=protocol.to_dict(), harness=HARNESS_VERSION, reference_ms=references,
                   drift=drift)
