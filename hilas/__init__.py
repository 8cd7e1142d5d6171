"""hilas: hardware-in-the-loop architecture search.

    import hilas
    run = hilas.Run("runs/demo-...")        # open a run directory
    model = hilas.load_model("exports/x")   # an exported candidate, back as a torch module

The four parts of the design are its subpackages: `hilas.spaces` (genome <-> compressed model),
`hilas.devices` (model artifact -> measured latency), `hilas.evaluators` (model + data -> accuracy) and
`hilas.search` (the loop, the store, the fronts, the CLI). `import hilas` imports none of them, nor torch or
Ray: each name below is loaded when it is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .search import (Comparison, Front, Point, Run, RunConfig, UserError, compare_runs, export_candidate,
                         load_config, load_model, recover_front, resume_run, start_run)

# name -> the module that defines it
_PUBLIC = {name: "hilas.search" for name in (
    "Comparison", "Front", "Point", "Run", "RunConfig", "UserError", "compare_runs", "export_candidate", "load_config",
    "load_model", "recover_front", "resume_run", "start_run")}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    if name == "__version__":
        from importlib.metadata import version

        return version("hilas")
    raise AttributeError(f"module 'hilas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__, "__version__"])
