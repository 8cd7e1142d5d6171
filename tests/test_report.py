"""The HTML report and the run comparison, read back as a page; the Python API beside the CLI."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from hilas.devices import fingerprint
from hilas.search import Run, UserError, compare_runs, hypervolume, non_dominated
from hilas.search.cli.main import app
from hilas.search.present.report import write_report
from hilas.search.results.fronts import read_fronts, recovered_points
from hilas.search.store import Store

from .pages import parse


def marks_of(page, prefix: str) -> list:
    return [m for m in page.find_all("path", "mark") if m.attrs["data-key"].startswith(prefix)]


def test_report_shows_each_device_front_baseline_history_settings_and_fingerprint(finished_runs, tmp_path):
    run = finished_runs[0]
    result = CliRunner().invoke(app, ["front", "report", str(run), "-o", str(tmp_path / "report.html")])
    assert result.exit_code == 0 and "wrote" in result.stdout
    html = (tmp_path / "report.html").read_text()
    page = parse(html)
    # self-contained: nothing to fetch
    assert not page.find_all("link") and not page.find_all("img")
    assert all("src" not in s.attrs for s in page.find_all("script")) and "http" not in html
    store = Store.open(run)
    generations, devices = store.generations(), store.devices()
    for device, front in read_fronts(run).items():
        marks = marks_of(page, f"{device}/")
        # every candidate evaluated once, the baseline again as its star
        assert len(marks) == len(front.evaluated) + 1
        for p in front.points:
            tip = next(m.attrs["data-tip"] for m in marks if m.attrs["data-key"] == f"{device}/{p.candidate}")
            lat = p.latency
            for expected in (f"candidate {p.candidate}", f"top-1 {100 * p.accuracy:.1f} %",
                             f"median {lat.median_ms:.4f} ms, p90 {lat.p90_ms:.4f} ms", f"n {lat.n} samples",
                             f"CV {100 * lat.cv:.1f} %", f"{p.params:,} params", f"{p.flops / 1e6:.2f} MFLOPs",
                             f"{front.baseline.latency.median_ms / lat.median_ms:.2f}x speed-up over the baseline"):
                assert expected in tip
        rows = [r for r in page.find_all("tr") if r.attrs.get("data-key", "").startswith(f"{device}/")]
        assert sorted(int(r.attrs["data-key"].split("/")[1]) for r in rows) == sorted(
            {p.candidate for p in front.points} | {front.baseline.candidate})
        assert f"median latency on {device} (ms)  \u2190 lower is better" in html
        assert fingerprint(devices[device]["info"]) in html
    assert "top-1 accuracy (%)  \u2191 higher is better" in html
    history = [m for m in page.find_all("path", "mark") if m.attrs["data-tip"].startswith("generation ")]
    assert len(history) == len(generations) * len(devices)
    assert "min_seconds" in html and "hilas-harness" in html
    assert "after recovery" not in html  # this run recovered nothing
    store.close()


def test_report_shows_the_recovered_front_beside_the_proxy_front(finished_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_runs[0], run)
    store = Store.open(run)
    proxy = read_fronts(run)["sim"]
    for i, p in enumerate(proxy.evaluated):  # a synthetic recovery: some candidates gain, others lose
        store.add_recovered_accuracy(p.model_key, min(1.0, p.accuracy + (0.05 if i % 2 else -0.02)), method="synthetic")
    recovered = recovered_points(store, "sim")
    store.close()
    assert len(recovered) == len(proxy.evaluated)
    page = parse(write_report(run).read_text())
    assert (run / "report.html").exists()
    after = [g for g in page.find_all("g", "series") if g.attrs["data-series"].startswith("Pareto front after")]
    assert len(after) == 2  # one per device
    sim = next(g for g in after if g.find_all("path", "mark")[0].attrs["data-key"].startswith("sim/"))
    assert len(sim.find_all("path", "mark")) == len(non_dominated(recovered))
    assert all("after recovery: candidate" in m.attrs["data-tip"] for m in sim.find_all("path", "mark"))
    headers = [th.text for th in page.find_all("th")]
    assert "after recovery %" in headers and "on front" in headers
    lead = f"after recovery {hypervolume(recovered, proxy.baseline.latency.median_ms):.3f}"
    assert lead in page.find_all("section")[1].text
    assert "synthetic" in page.find_all("header")[0].text


def test_comparison_scores_every_run_against_one_reference(finished_runs, tmp_path):
    first, second = finished_runs
    with pytest.raises(UserError, match="share several devices"):
        compare_runs([first, second])
    with pytest.raises(UserError, match="no device 'gpu'"):
        compare_runs([first, second], "gpu")
    comparison = compare_runs([first, second], "sim")
    own = [read_fronts(r)["sim"] for r in (first, second)]
    assert comparison.reference_ms == own[0].baseline.latency.median_ms and comparison.same_device
    assert [r.hypervolume for r in comparison.runs] == [hypervolume(f.points, comparison.reference_ms) for f in own]
    data = json.loads(json.dumps(comparison.to_json()))  # plain data, for notebooks
    assert [r["hypervolume"] for r in data["runs"]] == [r.hypervolume for r in comparison.runs]
    assert [r["own_hypervolume"] for r in data["runs"]] == [f.hypervolume for f in own]
    result = CliRunner().invoke(app, ["runs", "compare", str(first), str(second), "--device", "sim",
                                      "-o", str(tmp_path / "compare.html")])
    assert result.exit_code == 0, result.output
    assert f"{comparison.runs[1].hypervolume:.3f}" in result.stdout and "note:" not in result.stderr
    page = parse((tmp_path / "compare.html").read_text())
    assert [len(g.find_all("path", "mark")) for g in page.find_all("g", "series")] == [len(f.points) for f in own]
    assert len(page.find_all("table", "sortable")[1].find_all("tbody")[0].find_all("tr")) == sum(
        len(f.points) for f in own)


def test_comparison_warns_when_a_device_changed_between_runs(finished_runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(finished_runs[1], other)
    store = Store.open(other)
    info = store.devices()["sim"]["info"]
    store.add_device("sim", "virtual", {**info, "device": {**info["device"], "ms_per_mflop": 1.0}})
    store.close()
    assert not compare_runs([finished_runs[0], other], "sim").same_device
    result = CliRunner().invoke(app, ["runs", "compare", str(finished_runs[0]), str(other), "--device", "sim",
                                      "-o", str(tmp_path / "c.html")])
    assert result.exit_code == 0 and "fingerprints differ" in result.stderr
    assert "fingerprints differ" in (tmp_path / "c.html").read_text()


def test_the_python_api_mirrors_the_cli(finished_runs, tmp_path):
    run = Run(finished_runs[0])
    shown = CliRunner().invoke(app, ["front", "show", str(run.dir), "--json"])
    assert list(run.fronts_data().values()) == json.loads(shown.stdout)
    assert run.report(tmp_path / "r.html") == tmp_path / "r.html" and (tmp_path / "r.html").stat().st_size > 0
    with pytest.raises(UserError, match="run directory not found"):
        Run(tmp_path / "missing")


@pytest.mark.parametrize("args, message", [
    (["front", "report", "no-such-run"], "run directory not found"),
    (["front", "export", "no-such-run", "3"], "run directory not found"),
    (["runs", "compare", "no-such-run"], "at least two run directories"),
    (["runs", "compare", "a", "b"], "run directory not found: a"),
])
def test_bad_input(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []
