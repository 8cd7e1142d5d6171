"""Checks that a model can be searched, with errors that name the layer at fault, before a search starts."""

from __future__ import annotations

import torch
from torch import nn

from .space import ComposedSpace


def run_model(model: nn.Module, example_input: torch.Tensor, what: str = "the model") -> torch.Tensor:
    """`model(example_input)`, or ValueError naming the innermost layer that was running when it failed."""
    running: list[tuple[str, nn.Module]] = []  # the layers entered and not yet left, innermost last

    def enter(name: str, module: nn.Module) -> None:
        running.append((name, module))

    def leave() -> None:
        running.pop()

    entered = [m.register_forward_pre_hook(lambda mod, args, name=name: enter(name, mod))
               for name, m in model.named_modules()]
    left = [m.register_forward_hook(lambda mod, args, out: leave()) for m in model.modules()]
    try:
        with torch.no_grad():
            return model.eval()(example_input)
    except Exception as e:  # any failure inside the user's model is reported with its layer
        where = f"layer '{running[-1][0]}' ({type(running[-1][1]).__name__})" if running and running[-1][0] \
            else "its forward pass"
        message = " ".join(str(e).split())
        raise ValueError(f"{what} fails in {where} on an input of shape {list(example_input.shape)}: "
                         f"{type(e).__name__}: {message}") from None
    finally:
        for handle in entered + left:
            handle.remove()


def check_space(space: ComposedSpace) -> None:
    """Build and run every seed of the space (each block dropped, the importance masks): a model whose
    pruning the dependency graph cannot follow fails here, naming the layer, instead of mid-search."""
    expected = run_model(space.base_model, space.example_input).shape
    for genome in space.seeds():
        candidate = space.decode(genome)
        what = f"the model pruned to {candidate.structure_key.partition('/')[2]}"
        try:
            model = candidate.build()
        except Exception as e:  # Torch-Pruning's own errors while removing channels
            raise ValueError(f"{what} cannot be built: {type(e).__name__}: {' '.join(str(e).split())}") from None
        try:
            out = run_model(model, space.example_input, what)
        except ValueError as e:
            raise ValueError(f"{e} (the dependency graph cannot prune around that layer)") from None
        if out.shape != expected:
            raise ValueError(f"{what} returns shape {list(out.shape)} instead of {list(expected)}: a layer "
                             "the dependency graph does not follow changed the output")
