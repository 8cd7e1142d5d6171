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

from typing import TYPE_CHECKING

from ._lazy import lazy_names

if TYPE_CHECKING:
    from .search import (
        Comparison,
        Front,
        Point,
        Run,
        RunConfig,
        UserError,
        compare_runs,
        export_candidate,
        load_config,
        load_model,
    )

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    ".search": ["Comparison", "Front", "Point", "Run", "RunConfig", "UserError", "compare_runs", "load_config",
                "load_model"]})
