"""What the host hands to a device: one exported structure, runtime-neutral.

ONNX is the interchange format, so a device never needs torch and the export
runs once per structure however many devices measure it.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .agent import MeasurementError

OPSET = 17
STANDARD_DOMAINS = ("", "ai.onnx")

# Both warnings come from choosing the TorchScript exporter (dynamo=False) on
# purpose: it is fast and reliable for small CNNs. Everything else still shows.
_DYNAMO_FALSE_WARNINGS = (
    ("You are using the legacy TorchScript-based ONNX export", r".*"),
    ("The feature will be removed", r"torch\.onnx\."),
)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelArtifact:
    """What a device needs to run one structure: produced once per structure_key on the host."""

    structure_key: str
    onnx: bytes
    inputs: tuple[TensorSpec, ...]

    @cached_property
    def sha256(self) -> str:
        """Hex digest of the ONNX bytes: identifies exactly what was measured."""
        return hashlib.sha256(self.onnx).hexdigest()

    @cached_property
    def custom_ops(self) -> tuple[str, ...]:
        """"domain.op" of each node outside ONNX's standard domains (e.g. ai.hilas.BinaryConv2d, a 1-bit
        convolution): only agents that lower these ops themselves can run the artifact."""
        import onnx

        try:
            graph = onnx.load_from_string(self.onnx).graph
        except Exception:  # unreadable bytes: the runtime that loads them says why
            return ()
        return tuple(sorted({f"{n.domain}.{n.op_type}" for n in graph.node if n.domain not in STANDARD_DOMAINS}))


def export_onnx(model, example_input, structure_key: str) -> ModelArtifact:
    """Export `model` (an nn.Module) at the shape of `example_input` (a tensor) to ONNX in memory."""
    import torch

    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            for message, module in _DYNAMO_FALSE_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=DeprecationWarning, module=module)
            torch.onnx.export(
                model,
                (example_input,),
                buffer,
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["logits"],
            )
    except Exception as e:
        raise MeasurementError(
            "export", f"could not export {structure_key} to ONNX: {type(e).__name__}: {e}"
        ) from e
    finally:
        model.train(was_training)
    return ModelArtifact(structure_key=structure_key, onnx=buffer.getvalue(), inputs=input_specs(example_input))


def refuse_custom_ops(artifact: ModelArtifact, runtime: str) -> None:
    """Raise MeasurementError("compile") before anything is timed if `runtime` would meet custom ops it
    cannot run: measuring the model without them would time another model."""
    if artifact.custom_ops:
        raise MeasurementError(
            "compile", f"{runtime} cannot run 1-bit kernels or other custom ops ({', '.join(artifact.custom_ops)}) "
                       f"in {artifact.structure_key}; measure binary candidates with a tvm-cpu or ssh-tvm device"
        )


def input_specs(example_input) -> tuple[TensorSpec, ...]:
    """The input an export of a model at `example_input`'s shape takes (known before exporting)."""
    return (TensorSpec("input", tuple(example_input.shape), str(example_input.dtype).removeprefix("torch.")),)


def example_inputs(artifact: ModelArtifact, seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed-seed random feeds for the artifact's inputs: latency does not depend on values."""
    rng = np.random.default_rng(seed)
    return {
        spec.name: rng.standard_normal(spec.shape).astype(np.dtype(spec.dtype))
        for spec in artifact.inputs
    }
