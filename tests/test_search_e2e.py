"""The whole path through Ray: config -> search -> store -> fronts, and resume after kill -9."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hilas.search import RunConfig
from hilas.search.errors import UserError
from hilas.search.results.fronts import read_fronts
from hilas.search.runs import resume_run, start_run
from hilas.search.store import Store

# Short rounds on a busy 2-core machine disagree more than real ones: the noise check is not under test here.
FAST = {"warmup_runs": 2, "warmup_seconds": 0.01, "min_samples": 10, "min_seconds": 0.02, "cooldown_seconds": 0.0,
        "noise_threshold": 1.0}
SIM = {"sim": {"kind": "virtual", "seed": 1}}


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """One trained default model for the whole session (trained by the first test that needs it)."""
    monkeypatch.setenv("HILAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def test_search_on_cpu_and_virtual_device(tmp_path):
    cfg = RunConfig(budget=24, population=8, seed=1, devices=("local-cpu", "sim"), device_definitions=SIM,
                    measurement=FAST)
    result = start_run(cfg, tmp_path / "run")
    assert set(result) == {"local-cpu", "sim"}
    store = Store.open(tmp_path / "run")
    assert store.status == "finished"
    counts = store.counts()
    # genomes that decode to the same model (e.g. bits inside a dropped block) share one candidate
    assert 16 <= counts["candidates"] <= 24 and counts["failures"] == 0
    assert counts["accuracies"] == counts["candidates"]
    keys = [c.model_key for c in store.candidates()]
    assert len(keys) == len(set(keys))
    for device, front in result.items():
        assert front.baseline is not None and front.baseline.accuracy > 0.9
        assert front.points, device
        for p in front.points:  # every latency: 3 rounds, between drift references, with its settings
            assert len(p.latency.round_medians_ms) == 3 and p.latency.n >= 3 * FAST["min_samples"]
            assert len(p.latency.reference_ms) >= 2 and p.latency.drift is not None
            assert p.latency.protocol["min_seconds"] == FAST["min_seconds"] and p.latency.harness
        assert front.to_json()["device"] == device
    fingerprints = store.db.execute("SELECT DISTINCT device, fingerprint FROM latencies").fetchall()
    assert sorted(d for d, _ in fingerprints) == ["local-cpu", "sim"] and all(f for _, f in fingerprints)
    assert [g for g, _, _ in store.generations()] == list(range(len(store.generations())))
    store.close()
    assert read_fronts(tmp_path / "run")["sim"].points == result["sim"].points


def test_a_second_run_reuses_the_latency_database_unless_fresh(tmp_path, latency_database):
    cfg = RunConfig(budget=16, population=8, seed=1, devices=("sim",), device_definitions=SIM, measurement=FAST)
    first = start_run(cfg, tmp_path / "first")
    again = start_run(cfg, tmp_path / "again")
    fresh = start_run(RunConfig(**{**cfg.__dict__, "fresh": True}), tmp_path / "fresh")
    summaries = {name: Store.open(tmp_path / name).summary for name in ("first", "again", "fresh")}
    assert summaries["first"]["latency_from_database"] == 0 and summaries["first"]["latency_measured"] > 0
    # the virtual device is deterministic, so the second run asks for the same structures: all are reused
    assert summaries["again"]["latency_measured"] == 0
    assert summaries["again"]["latency_from_database"] == summaries["first"]["latency_measured"]
    assert summaries["again"]["database_hit_rate"] == 1.0
    assert summaries["fresh"]["latency_from_database"] == 0
    assert summaries["fresh"]["latency_measured"] == summaries["first"]["latency_measured"]
    assert again["sim"].points == first["sim"].points == fresh["sim"].points
    assert latency_database.exists()


def _vanishing(tmp_path: Path, answers: int) -> dict:
    return {"board": {"kind": "tests.kinds:VanishingBoard", "counter": str(tmp_path / "answered"),
                      "answers": answers, "seed": 2}}


def test_a_device_lost_midway_leaves_a_partial_front_and_the_search_goes_on(tmp_path):
    cfg = RunConfig(budget=16, population=8, seed=1, devices=("sim", "board"),
                    device_definitions={**SIM, **_vanishing(tmp_path, answers=6)}, measurement=FAST)
    result = start_run(cfg, tmp_path / "run")
    store = Store.open(tmp_path / "run")
    summary = store.summary
    assert store.status == "finished" and store.counts()["candidates"] >= 12
    assert "no answer within 10 s" in summary["devices_lost"]["board"]
    assert "board" not in summary["devices_lost"].get("sim", "")
    # the board's front holds what it measured before it was lost (the drift reference took some answers)
    assert 1 <= len(result["board"].evaluated) < len(result["sim"].evaluated)
    failed = store.db.execute("SELECT DISTINCT status FROM latencies WHERE device = 'board' AND status != 'ok'")
    assert [s for (s,) in failed] == ["device"]
    store.close()


def test_when_every_device_is_lost_the_run_stops_and_resumes_once_the_board_is_back(tmp_path):
    cfg = RunConfig(budget=16, population=8, seed=1, devices=("board",), device_definitions=_vanishing(tmp_path, 6),
                    measurement=FAST)
    with pytest.raises(UserError, match="no device is left to measure on: .*no answer within 10 s.*hilas search "
                                        "resume"):
        start_run(cfg, tmp_path / "run")
    store = Store.open(tmp_path / "run")
    assert store.status == "stopped"
    measured_before = store.counts()["measurements"]
    store.close()
    (tmp_path / "answered.revive").touch()
    result = resume_run(tmp_path / "run")
    store = Store.open(tmp_path / "run")
    assert store.status == "finished" and store.counts()["failures"] == 0
    assert store.counts()["measurements"] > measured_before and result["board"].points
    store.close()


def test_bad_input_leaves_no_run_directory(tmp_path):
    with pytest.raises(UserError, match="unknown device 'gpu9'"):
        start_run(RunConfig(devices=("gpu9",)), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="could not"):
        start_run(RunConfig(devices=("far",), device_definitions={"far": {"kind": "virtual",
                            "ray_resources": {"no-such-node": 1}}}, measurement=FAST), tmp_path / "run2")
    assert not (tmp_path / "run2").exists()


def _config_file(tmp_path: Path, budget: int) -> Path:
    text = f"""
[search]
budget = {budget}
population = 8
seed = 2
devices = ["sim"]
[measurement]
warmup_runs = 2
warmup_seconds = 0.01
min_samples = 10
min_seconds = 0.02
cooldown_seconds = 0.0
[device.sim]
kind = "virtual"
seed = 1
delay_s = 0.05
"""
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def _journal(run: Path) -> tuple[list, list]:
    db = sqlite3.connect(run / "run.sqlite")
    acc = db.execute("SELECT model_key, accuracy, created FROM accuracies ORDER BY model_key").fetchall()
    lat = db.execute("SELECT structure_key, median_ms, created FROM latencies ORDER BY structure_key").fetchall()
    db.close()
    return acc, lat


@pytest.mark.slow
def test_kill_9_then_resume_repeats_nothing_and_matches_an_uninterrupted_run(tmp_path):
    config = _config_file(tmp_path, budget=40)
    hilas = [sys.executable, "-m", "hilas.search.cli"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*hilas, "search", "run", str(config), "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.5)
        if (killed / "run.sqlite").exists() and len(_journal(killed)[0]) >= 12:
            break
    else:
        proc.kill()
        pytest.fail("the run did not reach 12 evaluations in time")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before_acc, before_lat = _journal(killed)
    assert Store.open(killed).status == "running"

    resumed = subprocess.run([*hilas, "search", "resume", str(killed)], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after_acc, after_lat = _journal(killed)
    # everything finished before the kill is still there, untouched (same values, same timestamps)
    assert set(before_acc) <= set(after_acc) and set(before_lat) <= set(after_lat)
    summary = Store.open(killed).summary
    assert summary["accuracy_evaluated"] == len(after_acc) - len(before_acc)

    straight = tmp_path / "straight"
    done = subprocess.run([*hilas, "search", "run", str(config), "--out", str(straight), "--fresh"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "latency database: not read: --fresh" in done.stdout
    # replay resume: the interrupted run evaluated exactly the genomes an uninterrupted one did
    assert [k for k, _, _ in after_acc] == [k for k, _, _ in _journal(straight)[0]]
    shown = [json.loads(subprocess.run([*hilas, "front", "show", str(r), "--json"], capture_output=True,
                                       text=True, env=env).stdout) for r in (killed, straight)]
    assert [p["candidate"] for p in shown[0]["front"]] == [p["candidate"] for p in shown[1]["front"]]
