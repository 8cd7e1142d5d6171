"""1-bit convolutions for TVM: the ai.hilas.BinaryConv2d ONNX node lowered to a scheduled bitserial kernel.

What the node computes (spaces.binary exports it): Y = scale[c] * conv2d(sign(X), W) + bias[c] with zero
padding, where sign(0) = +1, W holds +-1 and bias (an optional fourth input) is 0 when absent. A
BatchNormalization right after the node is folded into scale and bias before import, as the ONNX
exporter folds it into a float Conv. The kernel computes the node with bits, not floats:

- X is binarised and packed into 32-bit words along its channels inside the kernel (bit 1 means +1);
  the weights are packed once, here, at compile time (bit 1 means +1), and enter as constants.
- TVM's `topi.nn.bitserial_conv2d_nchw` (unipolar: 0/1 activations against +-1 weights) gives
  T = sum(a' * w) over a' = (a + 1) / 2, from AND and POPCOUNT of packed words. The +-1 product is
  sum(a * w) = 2 T - sum(w) over the taps inside the image, so the zero padding is exact: the
  epilogue subtracts that sum, a constant per output channel and position, and applies the scale
  and the bias.
- The schedule vectorises over 16 output channels (the weights are laid out with output channels
  innermost, so one vector load feeds 16 lanes of AND/POPCOUNT), unrolls the 3x3 taps, keeps the
  16 accumulators in registers, fuses the epilogue into their write-back, and parallelises over
  output positions (one thread unless TVM_NUM_THREADS says otherwise).

TVM 0.27's ONNX frontend takes no converters for unknown ops, so `import_onnx` subclasses its
importer (`ONNXGraphImporter`, private API of the pinned 0.27 series) to route this one op here.
"""

from __future__ import annotations

import math

import numpy as np

CUSTOM_DOMAIN = "ai.hilas"
BINARY_CONV = "BinaryConv2d"
SUPPORTED_OPS = frozenset({f"{CUSTOM_DOMAIN}.{BINARY_CONV}"})
WORD_BITS = 32
LANES = 16  # output channels per vector (fewer when they do not divide the count): 512 bits of uint32 (AVX-512);
# LLVM splits the vector for narrower units (NEON's 128 bits)
# Part of the compile cache's key: change it whenever the kernel or its schedule changes.
KERNEL = "bitserial_conv2d_nchw (topi, unipolar) + hilas schedule v1"


def pack_weights(weight: np.ndarray) -> np.ndarray:
    """+-1 weights (OC, C, K, K) -> uint32 words (C / 32, K, K, OC); bit 31 - k of a word is channel 32 q + k.

    The bit order is topi.nn.bitpack's, so packed weights and packed activations line up.
    """
    oc, c, kh, kw = weight.shape
    if c % WORD_BITS:
        raise ValueError(f"binary convolution needs input channels in multiples of {WORD_BITS}, got {c}")
    bits = (weight > 0).astype(np.uint8).reshape(oc, c // WORD_BITS, WORD_BITS, kh, kw).transpose(1, 3, 4, 0, 2)
    return np.packbits(bits, axis=-1, bitorder="big").view(">u4")[..., 0].astype(np.uint32)


def inside_sums(weight: np.ndarray, height: int, width: int, stride: int, pad: int) -> np.ndarray:
    """sum(W) over the taps of each output position that fall inside the image: (OC, OH, OW)."""
    oc, _, kh, kw = weight.shape
    per_tap = weight.sum(axis=1)  # (OC, KH, KW)
    inside = np.zeros((height + 2 * pad, width + 2 * pad))
    inside[pad:pad + height, pad:pad + width] = 1
    oh, ow = (height + 2 * pad - kh) // stride + 1, (width + 2 * pad - kw) // stride + 1
    out = np.zeros((oc, oh, ow))
    for y in range(kh):
        for x in range(kw):
            window = inside[y:y + stride * oh:stride, x:x + stride * ow:stride]
            out += per_tap[:, y, x, None, None] * window[None]
    return out


def output_shape(shape: tuple[int, int, int, int], out_channels: int, kernel: int, stride: int,
                 pad: int) -> tuple[int, int, int, int]:
    n, _, h, w = shape
    return n, out_channels, (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1


def binary_conv2d_primfunc(shape: tuple[int, int, int, int], out_channels: int, kernel: int, stride: int,
                           pad: int):
    """The scheduled TIR kernel for one input shape: (x, packed weights, 2 * scale, offset) -> y."""
    from tvm import s_tir, te, topi

    n, c, h, w = shape
    _, _, oh, ow = output_shape(shape, out_channels, kernel, stride, pad)
    x = te.placeholder(shape, "float32", name="x")
    packed = te.placeholder((c // WORD_BITS, kernel, kernel, out_channels), "uint32", name="packed_weight")
    twice_scale = te.placeholder((out_channels,), "float32", name="twice_scale")
    offset = te.placeholder((out_channels, oh, ow), "float32", name="offset")
    bits = te.compute(shape, lambda *i: (x(*i) >= 0).astype("int32"), name="bits")
    # The (OC, C/32, K, K, 1) view topi expects, over weights stored with output channels innermost.
    weight = te.compute((out_channels, c // WORD_BITS, kernel, kernel, 1),
                        lambda f, q, ky, kx, b: packed[q, ky, kx, f], name="weight_view")
    dots = topi.nn.bitserial_conv2d_nchw(bits, weight, stride, pad, 1, 1, pack_dtype="uint32", out_dtype="int32",
                                         unipolar=True)
    y = te.compute((n, out_channels, oh, ow),
                   lambda b, f, i, j: twice_scale[f] * dots[b, f, i, j].astype("float32") - offset[f, i, j], name="y")
    func = te.create_prim_func([x, packed, twice_scale, offset, y])

    sch = s_tir.Schedule(func)
    for name in ("bits", "weight_view", "QuantizeInput"):
        sch.compute_inline(sch.get_sblock(name))
    conv = sch.get_sblock("Conv2dOutput")
    b, f, i, j, rc, ry, rx, b2, b1 = sch.get_loops(conv)
    f_outer, f_inner = sch.split(f, [None, math.gcd(out_channels, LANES)])
    sch.reorder(b, i, j, f_outer, b2, b1, rc, ry, rx, f_inner)
    write_back = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(write_back, f_outer)
    sch.reverse_compute_inline(sch.get_sblock("y"))
    sch.vectorize(f_inner)
    sch.unroll(ry)
    sch.unroll(rx)
    sch.parallel(sch.fuse(b, i, j))
    sch.decompose_reduction(conv, b2)  # last: loop annotations need the reduction whole
    func = sch.mod["main"].without_attr("global_symbol")  # bb.add_func names it
    return func.with_attr("op_pattern", 8).with_attr("tir.is_scheduled", True)  # 8: opaque, never fused


def emit_binary_conv2d(bb, x, weight: np.ndarray, scale: np.ndarray, bias: np.ndarray, strides, pads):
    """Emit one BinaryConv2d into the Relax function `bb` is building; weights become packed constants."""
    from tvm import relax

    shape = tuple(int(d) for d in x.ty.shape)
    if len(shape) != 4 or weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"{BINARY_CONV} needs a 4-D NCHW input and square kernels, got input {shape} and "
                         f"weights {weight.shape}")
    if len(set(strides)) != 1 or len(set(pads)) != 1:
        raise ValueError(f"{BINARY_CONV} supports equal strides and pads on every side, got strides {strides}, "
                         f"pads {pads}")
    if not np.isin(weight, (-1.0, 1.0)).all():
        raise ValueError(f"{BINARY_CONV} weights must be +-1 (the exporter writes sign(W)), got other values")
    stride, pad = int(strides[0]), int(pads[0])
    oc, kernel = weight.shape[0], weight.shape[2]
    func = binary_conv2d_primfunc(shape, oc, kernel, stride, pad)
    offset = scale[:, None, None] * inside_sums(weight, shape[2], shape[3], stride, pad) - bias[:, None, None]
    constants = [pack_weights(weight), (2 * scale).astype("float32"), offset.astype("float32")]
    gv = bb.add_func(func, "binary_conv2d")
    out = relax.TensorType(list(output_shape(shape, oc, kernel, stride, pad)), "float32")
    return bb.emit(relax.call_tir(gv, [x, *(relax.const(c) for c in constants)], out))


def custom_ops(model) -> list[str]:
    """The "domain.op" names of the nodes of an ONNX model outside the standard domains."""
    return sorted({f"{node.domain}.{node.op_type}" for node in model.graph.node
                   if node.domain not in ("", "ai.onnx")})


def import_onnx(model, shapes: dict[str, list[int]]):
    """TVM's ONNX import, with ai.hilas.BinaryConv2d lowered by emit_binary_conv2d."""
    import onnx
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    unknown = sorted(set(custom_ops(model)) - SUPPORTED_OPS)
    if unknown:
        raise ValueError(f"no TVM lowering for custom ops {', '.join(unknown)}; this hilas knows "
                         f"{', '.join(sorted(SUPPORTED_OPS))}")

    class Importer(ONNXGraphImporter):
        def _check_for_unsupported_ops(self, graph) -> None:
            standard = onnx.GraphProto()  # TVM checks the standard nodes; custom_ops() checked the others
            standard.node.extend(node for node in graph.node if node.domain in ("", "ai.onnx"))
            super()._check_for_unsupported_ops(standard)

        def _convert_operator(self, op_name, inputs, attrs, opset):
            if op_name != BINARY_CONV:
                return super()._convert_operator(op_name, inputs, attrs, opset)
            x, weight, scale, *bias = inputs
            scale = _constant(scale, "scale")
            bias = _constant(bias[0], "bias") if bias and bias[0] is not None else np.zeros_like(scale)
            return emit_binary_conv2d(self.bb, x, _constant(weight, "weights"), scale, bias,
                                      attrs.get("strides", (1, 1)), attrs.get("pads", (0, 0, 0, 0)))

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    importer = Importer(shapes, "float32")
    return importer.from_onnx(fold_batchnorm(model).graph, opset)


def fold_batchnorm(model):
    """A copy of `model` where each BatchNormalization that alone reads a BinaryConv2d is folded into it.

    BN(y) = k * y + (beta - k * mean) with k = gamma / sqrt(var + eps): a new scale and bias per channel.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # in graph order, so an Identity of a Constant is seen after it
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in constants:  # the exporter's shared initializers
            constants[node.output[0]] = constants[node.input[0]]
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    producers = {n.output[0]: n for n in graph.node if n.domain == CUSTOM_DOMAIN and n.op_type == BINARY_CONV}
    folded = []
    for node in graph.node:
        conv = producers.get(node.input[0]) if node.op_type == "BatchNormalization" else None
        if conv is None or readers[node.input[0]] != 1 or len(conv.input) > 3 or len(node.output) != 1:
            continue
        if not all(name in constants for name in [*node.input[1:5], conv.input[2]]):
            continue
        gamma, beta, mean, var = (constants[name].astype(np.float64) for name in node.input[1:5])
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        k = gamma / np.sqrt(var + epsilon)
        scale = constants[conv.input[2]].astype(np.float64) * k
        names = [f"{node.output[0]}_folded_scale", f"{node.output[0]}_folded_bias"]
        for name, value in zip(names, (scale, beta - k * mean)):
            graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        conv.input[2:] = names
        conv.output[0] = node.output[0]
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    return model


def _constant(expr, what: str) -> np.ndarray:
    from tvm.ir.expr import Constant

    if not isinstance(expr, Constant):
        raise ValueError(f"{BINARY_CONV} {what} must be constants (initializers), got a computed tensor")
    return expr.value.numpy().astype(np.float32)
