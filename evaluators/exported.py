"""A `torch.export` program rebuilt as ordinary PyTorch layers, so it can be pruned like any module.

An exported program is one flat graph of ATen calls; Torch-Pruning's dependency graph and the block
drops need `nn.Conv2d`, `nn.BatchNorm2d` and `nn.Linear` modules inside the original module hierarchy.
`torch.export.unflatten` restores the hierarchy (one `InterpreterModule` per original module); each
module whose graph is a single convolution, batch norm or linear call becomes that layer, each module
that was an `nn.Sequential` chain becomes one again, and every other module becomes an `fx.GraphModule`
running its own graph. Names stay the original ones (`stage1.0.conv1`).
"""

from __future__ import annotations

import operator
import warnings
from collections import OrderedDict

import torch
from torch import fx, nn
from torch.export.unflatten import InterpreterModule, InterpreterModuleDispatcher

_aten = torch.ops.aten
_SEQUENTIAL = "torch.nn.modules.container.Sequential"


def lift_exported(program: torch.export.ExportedProgram, source: str) -> nn.Module:
    """`program` as a module of ordinary layers; ValueError naming the layer it cannot rebuild."""
    try:
        with warnings.catch_warnings():  # torch's own deprecation notice about its pytree specs
            warnings.simplefilter("ignore", FutureWarning)
            unflat = torch.export.unflatten(program)
    except Exception as e:  # unflatten's own errors: the program's module structure is not recoverable
        raise ValueError(f"{source}: the exported program's modules cannot be recovered: {e}") from None
    for name, child in list(unflat.named_children()):
        setattr(unflat, name, _lift(child, name, source))
    graph = unflat.graph
    output = next(n for n in graph.nodes if n.op == "output")
    results = output.args[0]
    if isinstance(results, (tuple, list)):
        if len(results) != 1:
            raise ValueError(f"{source}: the model returns {len(results)} outputs; hilas needs one tensor of "
                             "class scores")
        output.args = (results[0],)
    top = fx.GraphModule(unflat, graph, class_name="ExportedModel")
    top.graph.lint()
    return top


def _lift(module: nn.Module, name: str, source: str) -> nn.Module:
    if isinstance(module, InterpreterModuleDispatcher):
        raise ValueError(f"{source}: layer '{name}' is called more than once in the exported program; hilas cannot "
                         "prune a layer shared between two places")
    for child_name, child in list(module.named_children()):
        setattr(module, child_name, _lift(child, f"{name}.{child_name}", source))
    if not isinstance(module, InterpreterModule):
        return module  # a module the program never calls (an empty nn.Sequential shortcut, say)
    layer = _as_layer(module, name, source)
    if layer is not None:
        return layer
    children = _chain(module)
    if module._ty == _SEQUENTIAL and children is not None:
        return nn.Sequential(OrderedDict((n, getattr(module, n)) for n in children))
    return fx.GraphModule(module, module.graph, class_name=(module._ty or "Module").rpartition(".")[2])


def _chain(module: InterpreterModule) -> list[str] | None:
    """The children called one after another on the single input, or None if the graph is anything else."""
    nodes = [n for n in module.graph.nodes if n.op not in ("placeholder", "output")]
    previous = next((n for n in module.graph.nodes if n.op == "placeholder"), None)
    for node in nodes:
        if node.op != "call_module" or node.args != (previous,) or node.kwargs:
            return None
        previous = node
    return [n.target for n in nodes]


def _as_layer(module: InterpreterModule, name: str, source: str) -> nn.Module | None:
    """The layer this module's graph is (one convolution, batch norm or linear call on its input), else None.

    A module that holds weights but is not one of those layers is refused: pruning could not follow it.
    """
    calls = [n for n in module.graph.nodes if n.op in ("call_function", "call_method", "call_module")]
    holds_weights = any(True for _ in module.parameters(recurse=False)) or any(
        True for _ in module.buffers(recurse=False))
    if not holds_weights:
        return None
    main = [n for n in calls if n.target is not operator.getitem]
    if len(main) != 1 or main[0].op != "call_function":
        ops = ", ".join(str(n.target) for n in main) or "no call"
        raise ValueError(f"{source}: layer '{name}' holds weights used by {ops}; hilas rebuilds and prunes "
                         "Conv2d, BatchNorm2d and Linear layers only")
    node = main[0]
    args = [_value(module, a) for a in node.args]
    if node.target is _aten.conv2d.default:
        return _conv(*args)
    if node.target is _aten.convolution.default and not args[6]:
        x, w, b, stride, padding, dilation, _, _, groups = args
        return _conv(x, w, b, stride, padding, dilation, groups)
    if node.target is _aten.batch_norm.default:
        return _batch_norm(name, source, *args[1:5], momentum=args[6], eps=args[7])
    if node.target is _aten._native_batch_norm_legit_no_training.default:
        return _batch_norm(name, source, *args[1:5], momentum=args[5], eps=args[6])
    if node.target is _aten.linear.default:
        weight, bias = args[1], args[2] if len(args) > 2 else None
        return _load(nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None), weight, bias)
    raise ValueError(f"{source}: layer '{name}' holds weights used by {node.target}; hilas rebuilds and prunes "
                     "Conv2d, BatchNorm2d and Linear layers only")


def _value(module: nn.Module, arg):
    """A node argument as a value: a get_attr node becomes a copy of the tensor it reads."""
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        return getattr(module, arg.target).detach().clone()
    return arg


def _conv(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1) -> nn.Conv2d:
    out_channels, in_per_group, kh, kw = weight.shape
    layer = nn.Conv2d(in_per_group * groups, out_channels, (kh, kw), tuple(stride), tuple(padding),
                      tuple(dilation), groups, bias=bias is not None)
    return _load(layer, weight, bias)


def _batch_norm(name, source, weight, bias, running_mean, running_var, *, momentum, eps) -> nn.BatchNorm2d:
    if running_mean is None:
        raise ValueError(f"{source}: BatchNorm layer '{name}' keeps no running statistics; hilas re-estimates "
                         "them and needs track_running_stats=True")
    layer = _load(nn.BatchNorm2d(running_mean.shape[0], eps=eps, momentum=momentum, affine=weight is not None),
                  weight, bias)
    layer.running_mean.copy_(running_mean)
    layer.running_var.copy_(running_var)
    return layer


def _load(layer: nn.Module, weight: torch.Tensor | None, bias: torch.Tensor | None) -> nn.Module:
    with torch.no_grad():
        if weight is not None:
            layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer
