"""Run an ONNX graph with PyTorch ops, on any torch device.

The cuda agent's runtime when onnxruntime-gpu is not installed. hilas's artifacts use a handful
of CNN ops, so a small interpreter over torch.nn.functional runs them with the same cuDNN and
cuBLAS kernels a PyTorch model would use (onnx2torch needs torchvision, which does not import
beside our torch, and fails on our graphs). Every op it knows is in OPS; any other op is refused
when the program is built, before anything is timed.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from .agent import MeasurementError


def _pad_args(x: torch.Tensor, pads: list[int] | None, n: int, value: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """ONNX pads [begin..., end...] as torch's symmetric padding, or applied with F.pad when asymmetric."""
    pads = pads or [0] * (2 * n)
    begin, end = pads[:n], pads[n:]
    if begin == end:
        return x, begin
    torch_order = [p for i in reversed(range(n)) for p in (begin[i], end[i])]  # last dim first
    return F.pad(x, torch_order, value=value), [0] * n


def _conv(x, w, b=None, *, group=1, pads=None, strides=None, dilations=None, kernel_shape=None):
    # kernel_shape is implied by w
    n = w.dim() - 2
    x, padding = _pad_args(x, pads, n)
    conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    return conv(x, w, b, strides or 1, padding, dilations or 1, group)


def _max_pool(x, *, kernel_shape, pads=None, strides=None, dilations=None, ceil_mode=0, storage_order=0):
    # storage_order only orders the Indices output, which is not supported
    n = len(kernel_shape)
    x, padding = _pad_args(x, pads, n, value=-math.inf)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
    return pool(x, kernel_shape, strides or 1, padding, dilations or 1, bool(ceil_mode))


def _average_pool(x, *, kernel_shape, pads=None, strides=None, ceil_mode=0, count_include_pad=0):
    n = len(kernel_shape)
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
    padded, padding = _pad_args(x, pads, n)
    mean = pool(padded, kernel_shape, strides or 1, padding, bool(ceil_mode), bool(count_include_pad))
    if padded is not x and not count_include_pad:  # F.pad's zeros were counted: divide by the share of real values
        mean = mean / pool(_pad_args(torch.ones_like(x), pads, n)[0], kernel_shape, strides or 1, 0, bool(ceil_mode))
    return mean


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    a, b = (a.t() if transA else a), (b.t() if transB else b)
    if c is None:
        return alpha * (a @ b)
    return torch.addmm(c, a, b, beta=beta, alpha=alpha)


def _clip(x, low=None, high=None, *, min=None, max=None):
    # opset >= 11 gives the bounds as inputs, older opsets as attributes
    low, high = (min, max) if min is not None or max is not None else (low, high)
    return x if low is None and high is None else torch.clamp(x, low, high)


def _reshape(x, shape, *, allowzero=0):
    dims = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(shape.tolist())]
    return x.reshape(dims)


def _flatten(x, *, axis=1):
    return x.reshape(math.prod(x.shape[: axis + x.dim() if axis < 0 else axis]), -1)


def _batch_norm(x, scale, bias, mean, var, *, epsilon=1e-5, momentum=0.9, training_mode=0):
    # momentum only matters when training; training_mode=1 has extra outputs, refused at build
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=epsilon)


def _reduce_mean(x, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    # axes: an attribute before opset 18, an input (a host tensor) from opset 18
    axes = axes.tolist() if isinstance(axes, torch.Tensor) else axes
    if not axes and noop_with_empty_axes:
        return x
    return x.mean(dim=tuple(axes) if axes else tuple(range(x.dim())), keepdim=bool(keepdims))


# ONNX op type -> function(*inputs, **attributes) returning the node's one output. Each function's
# signature is the op's contract: a node whose inputs or attributes do not fit it is refused at build.
OPS = {
    "Conv": _conv,
    "Relu": lambda x: torch.relu(x),
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: a / b,
    "Sigmoid": lambda x: torch.sigmoid(x),
    "Clip": _clip,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "Flatten": _flatten,
    "Gemm": _gemm,
    "MatMul": lambda a, b: a @ b,
    "Reshape": _reshape,
    "Identity": lambda x: x,
    "BatchNormalization": _batch_norm,
    "Concat": lambda *xs, axis: torch.cat(xs, dim=axis),
    "ReduceMean": _reduce_mean,
}
# Constant nodes are evaluated once, when the program is built; these are the forms they take.
CONSTANT_FORMS = {"value": numpy_helper.to_array, "value_float": np.float32, "value_floats": np.float32,
                  "value_int": np.int64, "value_ints": np.int64}


class OnnxTorchProgram:
    """An ONNX graph ready to run on `device`: weights on the device, each call one pass over the nodes.

    Float constants (weights) are moved to the device once, here; integer constants (shapes, axes)
    stay on the host, so reading them never waits for the device.
    """

    def __init__(self, onnx_bytes: bytes, device: torch.device | str) -> None:
        graph = onnx.load_model_from_string(onnx_bytes).graph
        self.device = torch.device(device)
        self.constants = {t.name: self._tensor(numpy_helper.to_array(t)) for t in graph.initializer}
        self.steps: list[tuple] = []
        unsupported: list[str] = []
        for node in graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
            if attrs.get("auto_pad") == "NOTSET":  # the default, so the functions need not know it
                del attrs["auto_pad"]
            problem = self._add(node, attrs)
            if problem:
                unsupported.append(problem)
        if unsupported:
            raise MeasurementError(
                "runtime",
                f"hilas's torch runtime cannot run this ONNX graph: it does not support "
                f"{', '.join(sorted(set(unsupported)))}; install onnxruntime-gpu for full ONNX coverage (the cuda "
                f"device then runs models with onnxruntime), or use only the ops {', '.join(sorted(OPS))} and Constant",
            )
        self.outputs = [o.name for o in graph.output]

    def _add(self, node: onnx.NodeProto, attrs: dict) -> str | None:
        """Add a node (a constant, or a step to run); returns what is unsupported about it, if anything."""
        if node.domain not in ("", "ai.onnx") or (node.op_type not in OPS and node.op_type != "Constant"):
            return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        if len(node.output) != 1:
            return f"{node.op_type} with {len(node.output)} outputs"
        if node.op_type == "Constant":
            (form, value), = attrs.items()
            if form not in CONSTANT_FORMS:
                return f"Constant with attribute {form}"
            self.constants[node.output[0]] = self._tensor(np.asarray(CONSTANT_FORMS[form](value)))
            return None
        fn = OPS[node.op_type]
        inputs = list(node.input)
        try:
            inspect.signature(fn).bind(*inputs, **attrs)
        except TypeError as e:
            return f"{node.op_type} ({e})"
        self.steps.append((fn, inputs, node.output[0], attrs))
        return None

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.array(array))
        return tensor.to(self.device) if tensor.is_floating_point() else tensor

    def __call__(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The graph's outputs for `inputs` (input name -> tensor on the program's device)."""
        values = {**self.constants, **inputs}
        with torch.inference_mode():
            for fn, names, output, attrs in self.steps:
                values[output] = fn(*[values[n] if n else None for n in names], **attrs)
        return [values[name] for name in self.outputs]
