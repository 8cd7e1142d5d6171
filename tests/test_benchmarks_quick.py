"""The utilisation and scaling benchmarks' quick paths, end to end, into a temporary results directory.

They check the wiring and that the results hold together; never a speed (CI must not assert on one).
"""

import json

import pytest

from benchmarks import scaling, utilisation
from benchmarks.results_io import README


@pytest.fixture
def readme_untouched():
    """A quick run must never replace a section of benchmarks/README.md."""
    before = README.read_text(encoding="utf-8")
    yield
    assert README.read_text(encoding="utf-8") == before


@pytest.fixture
def one_epoch_default(tmp_path, monkeypatch):
    """A private cache whose default model is trained for one epoch: accuracy is not under test here.

    Trained on one thread: two threads on a busy 2-core machine wait on each other ten times longer.
    """
    import torch

    import evaluators.default

    monkeypatch.setenv("HILAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(evaluators.default, "EPOCHS", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        evaluators.default.default_task()
    finally:
        torch.set_num_threads(threads)


def _recorded(saved: dict, command: str) -> None:
    assert saved["command"] == command and saved["date"] and saved["seed"] == 0
    assert {"cpu", "cores", "os", "load_average", "load_average_after"} <= set(saved["machine"])
    assert {"python", "torch", "ray", "onnxruntime"} <= set(saved["versions"])


def test_utilisation_quick(tmp_path, one_epoch_default, readme_untouched):
    out = tmp_path / "results"
    utilisation.write_results(utilisation.run(utilisation.QUICK), out, readme=False)
    saved = json.loads((out / "utilisation-quick.json").read_text())
    _recorded(saved, "python -m benchmarks.utilisation --quick")
    assert (out / "utilisation-quick.md").read_text().startswith("# Device utilisation during a search")
    windows = {w["window"]: w for w in saved["windows"]}
    assert list(windows) == ["whole run", "before the search loop", "search loop"]
    for w in windows.values():
        phases = sum(w[f"{p}_s"] for p in utilisation.PHASES)
        assert phases + w["not_measuring_s"] == pytest.approx(w["wall_s"])
        assert 0 <= w["timed_fraction"] <= w["busy_fraction"] <= 1
    assert windows["search loop"]["wall_s"] < windows["whole run"]["wall_s"]
    assert windows["search loop"]["timed_s"] > 0 and saved["rounds"] > 0
    counts = saved["counts"]
    assert counts["from_database"] == 0 and saved["kept_measurements"] == counts["measurements"] > 0
    # the trace's timed phases span the timer's readings, plus the drift reference's runs
    assert 0 < saved["kept_timed_s"] <= saved["trace_timed_s"] * 1.001
    assert saved["accuracies_scored"] > 0 and saved["accuracy_s"] > 0
    assert saved["machine_cpu_busy"] is None or 0 <= saved["machine_cpu_busy"] <= 1


def test_scaling_quick(tmp_path, readme_untouched):
    out = tmp_path / "results"
    settings = scaling.QUICK
    scaling.write_results(scaling.run(settings), out, readme=False)
    saved = json.loads((out / "scaling-quick.json").read_text())
    _recorded(saved, "python -m benchmarks.scaling --quick")
    assert (out / "scaling-quick.png").stat().st_size > 0
    assert "scaling-quick.png" in (out / "scaling-quick.md").read_text()
    rows = saved["rows"]
    assert [(r["delay_s"], r["devices"]) for r in rows] == [(d, n) for d in settings.delays_s for n in settings.counts]
    for r in rows:
        assert (r["failed"], r["measured"]) == (0, r["devices"] * settings.artifacts)
        assert r["rate"] > 0 and r["ideal"] > 0 and r["efficiency"] > 0
        assert r["machine_cpu_busy"] is None or 0 <= r["machine_cpu_busy"] <= 1
    assert all(r["efficiency"] == pytest.approx(1.0) for r in rows if r["devices"] == 1)
