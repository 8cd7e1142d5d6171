"""The search: the loop and its algorithms (`loop`), run set-up (`setup`), the store (`store`), results and the
workflows on them (`results`), presentation (`present`) and the command line (`cli`).

Its public face is `Run`, a run directory and everything done with it (Optuna's `Study`), with the types
it hands back; the functions behind it live in their rooms. Names load on first use (see `hilas._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hilas._lazy import lazy_names

if TYPE_CHECKING:
    from .config import RunConfig, load_config
    from .errors import UserError
    from .results.compare import Comparison, compare_runs
    from .results.export import load_model
    from .results.fronts import Front, Point, hypervolume, non_dominated
    from .run import Run
    from .store import Store, list_runs

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    ".config": ["RunConfig", "load_config"],
    ".errors": ["UserError"],
    ".results.compare": ["Comparison", "compare_runs"],
    ".results.export": ["load_model"],
    ".results.fronts": ["Front", "Point", "hypervolume", "non_dominated"],
    ".run": ["Run"],
    ".store": ["Store", "list_runs"],
})
