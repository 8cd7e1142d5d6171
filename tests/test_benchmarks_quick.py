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

    import hilas.evaluators.default

    monkeypatch.setenv("HILAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(hilas.evaluators.default, "EPOCHS", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        hilas.evaluators.default.default_task()
    finally:
        torch.set_num_threads(threads)


def _recorded(saved: dict, command: str) -> None:
    assert saved["command"] == command and saved["date"] and saved["seed"] == 0
    assert {"cpu", "cores", "os", "load_average", "load_average_after"} <= set(saved["machine"])
    assert {"python", "torch", "ray", "onnxruntime"} <= set(saved["versions"])


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.realdata
@pytest.mark.slow
def test_front_quality_quick(tmp_path, monkeypatch, readme_untouched):
    """MNIST with tiny budgets: every method searched (or pruned), measured, recovered and tabled."""
    from benchmarks import front_quality

    if not (front_quality.DATA / "mnist-t10k").is_dir():
        pytest.skip(f"real data is absent: {front_quality.DATA / 'mnist-t10k'} (see ../shared/data/README.md)")
    monkeypatch.setenv("HILAS_LATENCY_DB", str(tmp_path / "unused.sqlite"))  # the command sets its own; restored
    out = tmp_path / "results"
    front_quality.main(["--quick", "--results", str(out), "--runs", str(tmp_path / "runs")])
    saved = json.loads((out / "front-quality-quick.json").read_text())
    _recorded(saved, "python -m benchmarks.front_quality --quick")
    budget = front_quality.QUICK["mnist"]
    mnist = saved["datasets"]["mnist"]
    methods = mnist["methods"]
    assert list(methods) == ["hilas", "hilas, plain loop", "random", "uniform-l1", "uniform-l1, plain loop"]
    # the plain loop recovers the very models hilas's recipe recovered
    assert [r["candidate"] for r in methods["hilas, plain loop"]["recovered"]] == \
        [r["candidate"] for r in methods["hilas"]["recovered"]]
    assert [r["ratio"] for r in methods["uniform-l1, plain loop"]["recovered"]] == list(budget.ratios)
    # hilas's recovery never leaves a model below where it started
    for name in ("hilas", "uniform-l1"):
        assert all(r["top1_recovered"] >= r["top1_proxy"] for r in methods[name]["recovered"]
                   if not r.get("baseline")), name
    # distinct models scored: a search may try a model again (the same genome, or one that differs only in a
    # dropped block's channels), which is scored once
    for search in ("hilas", "hilas, plain loop", "random"):
        assert budget.evaluations // 2 < methods[search]["evaluations"] <= budget.evaluations, search
    assert [r["ratio"] for r in methods["uniform-l1"]["recovered"]] == list(budget.ratios)
    for name, method in methods.items():
        rows = method["recovered"]
        assert 0 < len(rows) <= (len(budget.ratios) if name.startswith("uniform-l1") else budget.members), name
        assert all(0 <= r["top1_recovered"] <= 1 and r["median_ms"] > 0 for r in rows), name
        assert 0 <= method["hypervolume"] < 1, name
        for fraction, top1 in method["top1_at"].items():
            fast = [r["top1_recovered"] for r in rows if r["median_ms"] <= float(fraction) * mnist["teacher_median_ms"]]
            assert top1 == (max(fast) if fast else None), (name, fraction)
    targets = [r["target_top1"] for r in mnist["flops_vs_latency"]]
    assert targets == sorted(targets, reverse=True) and len(targets) == len(front_quality.POINTS_BELOW_TEACHER)
    table = (out / "front-quality-quick.md").read_text()
    assert table.startswith("# Front quality") and "hypervolume" in table and "Recovery, same models" in table


def test_suite_times_each_step_and_stops_at_a_failure(tmp_path):
    from benchmarks import suite

    record = suite.run([["json.tool", "--help"], ["platform"]], "python -m benchmarks.suite --quick")
    assert [s["step"] for s in record["steps"]] == ["python -m json.tool --help", "python -m platform"]
    assert all(s["seconds"] >= 0 for s in record["steps"]) and record["seconds"] >= 0
    assert record["command"] == "python -m benchmarks.suite --quick" and record["date"]
    assert {"cpu", "cores", "load_average", "load_average_after"} <= set(record["machine"])
    table = suite.write_results(record, tmp_path, readme=False)
    assert "| `python -m platform` |" in table and (tmp_path / "suite-quick.json").exists()
    with pytest.raises(SystemExit, match=r"`python -m json.tool /nonexistent/in.json` failed with exit status"):
        suite.run([["json.tool", "/nonexistent/in.json"], ["platform"]], "python -m benchmarks.suite")
