"""Public names of a package, each imported from its module when first used (Optuna's and SciPy's pattern).

`import hilas.devices` then costs what its `__init__` costs, nothing more: the command line starts in well
under a second, and reading a run's store never imports torch, Ray, onnx or pymoo.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_names(package: str, modules: dict[str, list[str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]],
                                                                     list[str]]:
    """`__getattr__`, `__dir__` and `__all__` for `package`, whose public names are `modules` (a module,
    relative to the package, -> the names it defines)."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)  # looked up once
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__, sorted(where)
