"""One import namespace, and a command line that loads nothing heavy it does not need (no timing here: the
startup times are in benchmarks/cli_startup.py)."""

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

PACKAGES = ["hilas", "hilas.search", "hilas.devices", "hilas.spaces", "hilas.evaluators"]
HEAVY = ("torch", "ray", "onnx", "onnxruntime", "pymoo", "tvm")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_loads_and_none_is_shadowed_by_a_submodule(package):
    """Lazy names resolve to what they name; a public name that is also a submodule's name would resolve to the
    module once that submodule had been imported (which is how `from hilas.evaluators import distill` broke)."""
    module = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert not set(module.__all__) & submodules
    for name in module.__all__:
        value = getattr(module, name)
        assert not isinstance(value, type(module)), name
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        module.__getattr__("nothing_here")


def _imported_by(code: str) -> list[str]:
    probe = (f"import sys\n{code}\n"
             f"print(__import__('json').dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _cli(*args: str) -> str:
    return ("from hilas.search.cli.main import app\n"
            f"try:\n    app({list(args)!r})\nexcept SystemExit:\n    pass")


@pytest.mark.parametrize("code", [
    "import hilas",
    "import hilas.search, hilas.devices, hilas.spaces, hilas.evaluators",
    "from hilas.search.store import Store, open_run, list_runs",
    _cli("--help"),
    _cli("devices", "list"),
    _cli("runs", "list", "."),
    _cli("front", "--help"),
])
def test_light_entry_points_import_no_heavy_library(code):
    assert _imported_by(code) == []


@pytest.mark.slow
def test_front_show_of_a_finished_run_imports_no_heavy_library(finished_runs):
    code = _cli("front", "show", str(finished_runs[0]), "--json")
    assert _imported_by(code) == []


def test_the_distribution_installs_one_top_level_package():
    """search, devices, spaces and evaluators were top-level packages, which PyPI's `spaces` (and a user's own
    `search.py`) replaced or shadowed. The installed distribution now names `hilas` alone."""
    from importlib.metadata import distribution

    assert distribution("hilas").read_text("top_level.txt").split() == ["hilas"]
