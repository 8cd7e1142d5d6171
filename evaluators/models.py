"""Users' models: a Python factory plus a state dict file, or a `torch.export` archive (`.pt2`).

Errors are ValueError with one line that names the file, the factory or the layer at fault.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import torch
from torch import nn

from .exported import lift_exported


def load_factory_model(factory: str, weights: Path | None = None) -> nn.Module:
    """`factory` is "package.module:function"; the function is called with no arguments and returns an
    `nn.Module`, into which `weights` (a state dict file) is loaded strictly. Eval mode, float32."""
    model = call_factory(factory)
    if weights is not None:
        state = load_state_dict_file(weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{weights} does not fit the model {factory} returns: {_one_line(e)}") from None
    return model.float().eval()


def call_factory(factory: str) -> nn.Module:
    module_name, _, function_name = factory.partition(":")
    if not module_name or not function_name.isidentifier():
        raise ValueError(f"[model] factory must be 'package.module:function', got {factory!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name} for [model] factory: {e} (the module must be importable: "
                         "installed, or on PYTHONPATH)") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"module {module_name} has no function {function_name!r} ([model] factory)")
    try:
        model = function()
    except Exception as e:  # the user's code: whatever it raises is reported, not a crash
        raise ValueError(f"[model] factory {factory} failed: {type(e).__name__}: {_one_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"[model] factory {factory} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict saved with `torch.save(model.state_dict(), path)`, read with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{path} is not a state dict that loads with torch.load(weights_only=True) "
                         f"({_one_line(e)[:160]}); save model.state_dict(), not the model") from None
    if isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        return state
    if isinstance(state, dict):
        what = f"a dict with keys {', '.join(map(repr, list(state)[:5]))}" if state else "an empty dict"
    else:
        what = f"a {type(state).__name__}"
    nested = [k for k, v in state.items() if isinstance(v, dict)] if isinstance(state, dict) else []
    hint = f" (its {nested[0]!r} entry may be one: save that alone)" if nested else ""
    raise ValueError(f"{path} is not a state dict: it holds {what}, not parameter names mapped to tensors"
                     f"{hint}; save model.state_dict()")


def load_exported_model(path: Path) -> nn.Module:
    """A `torch.export` archive rebuilt as ordinary layers (see `lift_exported`), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"exported model not found: {path}")
    try:
        program = torch.export.load(path)
    except Exception as e:  # torch.export.load raises many kinds on a file that is not an archive
        raise ValueError(f"{path} is not a torch.export archive: {type(e).__name__}: {_one_line(e)[:160]} "
                         "(save one with torch.export.save(torch.export.export(model, (x,)), path))") from None
    return lift_exported(program, str(path)).eval()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
