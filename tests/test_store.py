import sqlite3

import pytest

from hilas.devices.latency import summarize
from hilas.search.results.fronts import Point, dominates, hypervolume, non_dominated, run_fronts
from hilas.search.store import SCHEMA_VERSION, Store


def lat(ms):
    """Three rounds of samples that float32 holds exactly (for the ms used here), so reads compare equal."""
    return summarize([[ms * 0.75, ms], [ms], [ms, ms * 1.25]], warmup_runs=3, runtime="test")


@pytest.fixture
def store(tmp_path):
    s = Store.create(tmp_path / "run", {"devices": ["cpu"], "budget": 4}, {"seed": 0})
    yield s
    s.close()


def test_round_trip_survives_reopen(store, tmp_path):
    cid = store.add_candidate("k1", "arch1", "0101", 0)
    assert store.add_candidate("k1", "arch1", "0101", 3) == cid  # the same genome keeps its first id
    store.add_structure("arch1", 10, 20, {"g": 3}, ["stage1.0"])
    store.add_accuracy("k1", 0.9, seconds=0.1)
    store.add_latency("cpu", "arch1", lat(2.0))
    store.add_latency("cpu", "arch2", None, status="runtime", message="boom")
    store.baseline_key = "k1"
    store.close()

    again = Store.open(tmp_path / "run")
    assert again.config == {"devices": ["cpu"], "budget": 4}
    assert again.accuracy("k1") == ("ok", 0.9, None)
    row = again.latency("cpu", "arch1", samples=True)
    assert row.status == "ok" and row.latency == lat(2.0)
    assert again.latency("cpu", "arch1").latency.samples_ms == ()  # summaries unless samples are asked for
    failed = again.latency("cpu", "arch2")
    assert failed.status == "runtime" and failed.latency is None and failed.message == "boom"
    assert again.structure("arch1") == {"params": 10, "flops": 20, "widths": {"g": 3}, "dropped": ["stage1.0"]}
    assert [c.candidate for c in again.candidates()] == [cid]
    assert again.counts() == {"candidates": 1, "accuracies": 1, "measurements": 1, "from_database": 0,
                              "failures": 1}
    again.close()


def test_noise_is_kept_as_evidence_never_as_a_latency(store):
    store.add_latency("cpu", "a", None, status="noisy", message="rounds disagree", evidence=lat(2.0))
    row = store.latency("cpu", "a", samples=True)
    assert (row.status, row.latency, row.evidence) == ("noisy", None, lat(2.0))
    assert store.db.execute("SELECT median_ms FROM latencies").fetchone() == (None,)
    with pytest.raises(ValueError, match="evidence"):
        store.add_latency("cpu", "b", lat(1.0), evidence=lat(1.0))


def test_reused_latencies_say_where_they_came_from(store):
    store.add_latency("cpu", "a", lat(1.0), fingerprint="f00d", source="database")
    assert store.latency("cpu", "a").source == "database"
    assert store.counts()["from_database"] == 1


def test_a_store_of_another_schema_is_refused(store, tmp_path):
    store.schema = 1
    with pytest.raises(ValueError, match="store schema 1.*start a new run"):
        Store.open(tmp_path / "run")


# The tables of store schema 2 (hilas 0.1 as first released), as that version created them.
SCHEMA_2 = """
CREATE TABLE run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (device TEXT PRIMARY KEY, kind TEXT NOT NULL, info TEXT NOT NULL);
CREATE TABLE candidates (candidate INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, arch_key TEXT NOT NULL,
    genome TEXT NOT NULL, generation INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE structures (arch_key TEXT PRIMARY KEY, params INTEGER NOT NULL, flops INTEGER NOT NULL,
    widths TEXT NOT NULL, dropped TEXT NOT NULL);
CREATE TABLE accuracies (key TEXT PRIMARY KEY, status TEXT NOT NULL, accuracy REAL, message TEXT, seconds REAL,
    created REAL NOT NULL);
CREATE TABLE latencies (device TEXT NOT NULL, arch_key TEXT NOT NULL, status TEXT NOT NULL, median_ms REAL,
    p90_ms REAL, rounds_cv REAL, n INTEGER, latency TEXT, samples BLOB, message TEXT, fingerprint TEXT,
    source TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (device, arch_key));
CREATE TABLE generations (generation INTEGER PRIMARY KEY, evaluations INTEGER NOT NULL, hypervolume TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE recovered_accuracies (key TEXT PRIMARY KEY, accuracy REAL NOT NULL, method TEXT NOT NULL,
    seconds REAL, created REAL NOT NULL);
"""


def test_a_store_of_schema_2_is_migrated_and_keeps_everything(tmp_path):
    """Schema 2 named model keys `key` and structure keys `arch_key`, and stored recovered accuracies without
    `before` and `kept`: opened now, the file is brought to this schema in place and reads as it did."""
    run = tmp_path / "old"
    run.mkdir()
    db = sqlite3.connect(run / "run.sqlite")
    db.executescript(SCHEMA_2 + """
        INSERT INTO run VALUES ('schema', '2'), ('config', '{"devices": ["cpu"], "budget": 4}'),
                               ('baseline_key', '"k1"');
        INSERT INTO candidates VALUES (1, 'k1', 'arch1', '0101', 0, 0);
        INSERT INTO structures VALUES ('arch1', 10, 20, '{}', '[]');
        INSERT INTO accuracies VALUES ('k1', 'ok', 0.9, NULL, 0.1, 0);
        INSERT INTO recovered_accuracies VALUES ('k1', 0.75, 'distillation: 10 shots per class, 1 epochs', 2.0, 0);""")
    measured = lat(2.0)
    db.execute("INSERT INTO latencies VALUES ('cpu', 'arch1', 'ok', ?, ?, ?, ?, ?, ?, NULL, 'f00d', 'measured', 0)",
               (measured.median_ms, measured.p90_ms, measured.rounds_cv, measured.n, *measured.to_record()))
    db.commit()
    db.close()
    store = Store.open(run)
    try:
        assert store.schema == SCHEMA_VERSION and store.baseline_key == "k1"
        row = store.recovered_accuracy("k1")
        assert (row.accuracy, row.before, row.kept, row.seconds) == (0.75, None, "recovered", 2.0)
        assert [(c.candidate, c.model_key, c.structure_key) for c in store.candidates()] == [(1, "k1", "arch1")]
        assert store.accuracy("k1") == ("ok", 0.9, None)
        assert store.latency("cpu", "arch1", samples=True).latency == lat(2.0)
        assert [r.accuracy for r in store.scored("cpu", recovered=True)] == [0.75]
        store.add_recovered_accuracy("k2", 0.5, method="m", before=0.6, kept="before")
        assert store.recovered("m")[0].kept == "before"
        with pytest.raises(ValueError, match="kept must be one of"):
            store.add_recovered_accuracy("k3", 0.5, method="m", kept="mine")
    finally:
        store.close()


def test_journal_is_append_only(store):
    store.add_accuracy("k", 0.5)
    with pytest.raises(sqlite3.IntegrityError):
        store.add_accuracy("k", 0.6)
    store.add_latency("cpu", "a", lat(1.0))
    with pytest.raises(sqlite3.IntegrityError):
        store.add_latency("cpu", "a", lat(2.0))


def test_failure_never_stores_a_number(store):
    with pytest.raises(ValueError):
        store.add_latency("cpu", "a", lat(1.0), status="timeout")
    with pytest.raises(ValueError):
        store.add_latency("cpu", "a", None)
    with pytest.raises(ValueError):
        store.add_accuracy("k", None)


def test_create_refuses_an_existing_run(store, tmp_path):
    with pytest.raises(FileExistsError):
        Store.create(tmp_path / "run", {}, {})


def test_store_uses_wal(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def point(cid, acc, ms):
    return Point(cid, f"k{cid}", f"a{cid}", acc, lat(ms), 1, 1)


def test_non_dominated_is_exactly_the_pareto_set():
    import random

    rng = random.Random(0)
    pts = [point(i, rng.choice([0.5, 0.6, 0.7, 0.8, 0.9]), rng.choice([1, 2, 3, 4, 5])) for i in range(60)]
    front = non_dominated(pts)
    for p in front:
        assert not any(dominates(q, p) for q in pts)
    for p in pts:
        if p not in front:
            assert any(dominates(q, p) for q in front) or any(
                (q.accuracy, q.latency.median_ms) == (p.accuracy, p.latency.median_ms) for q in front)
    assert [p.latency.median_ms for p in front] == sorted(p.latency.median_ms for p in front)
    assert [p.accuracy for p in front] == sorted(p.accuracy for p in front)


def test_hypervolume_by_hand():
    # reference latency 10 ms: points at x = 0.2 (error 0.5) and x = 0.5 (error 0.1)
    pts = [point(1, 0.5, 2.0), point(2, 0.9, 5.0), point(3, 0.4, 8.0), point(4, 0.95, 12.0)]
    expected = (1 - 0.2) * (1 - 0.5) + (1 - 0.5) * (0.5 - 0.1)
    assert hypervolume(pts, 10.0) == pytest.approx(expected)
    assert hypervolume([], 10.0) == 0.0


def test_run_fronts_only_use_successful_results(store, tmp_path):
    for i, acc in enumerate([0.9, 0.8, 0.95, 0.7]):
        store.add_candidate(f"k{i}", f"a{i}", "0", 0)
        store.add_structure(f"a{i}", 100, 200, {}, [])
        store.add_accuracy(f"k{i}", acc)
    store.add_latency("cpu", "a0", lat(4.0))
    store.add_latency("cpu", "a1", lat(2.0))
    store.add_latency("cpu", "a2", None, status="runtime", message="crashed")  # best numbers but failed
    store.add_latency("cpu", "a3", lat(3.0))
    store.baseline_key = "k0"
    front = run_fronts(tmp_path / "run", store)["cpu"]
    assert [p.model_key for p in front.points] == ["k1", "k0"]
    assert front.baseline.model_key == "k0"
    assert len(front.evaluated) == 3
    data = front.to_json()
    assert set(data) >= {"run", "device", "baseline", "front"}
    assert set(data["front"][0]) >= {"candidate", "accuracy", "latency_ms", "params", "flops", "structure_key"}
    assert set(data["front"][0]["latency_ms"]) >= {"median", "p90", "p99", "n", "cv", "rounds_cv", "round_medians"}


def test_resume_refuses_a_device_that_changed(store, tmp_path):
    from hilas.search.errors import UserError
    from hilas.search.runs import _check_same_devices

    info = {"kind": "onnxruntime-cpu", "device": {"cpu_model": "X"}, "runtime": {"version": "1.32.0"}}
    store.add_device("cpu", "onnxruntime-cpu", info)
    _check_same_devices(tmp_path, store, {"cpu": {**info, "state": {"load_average": [3.0]}}})  # same device
    upgraded = {**info, "runtime": {"version": "1.33.0"}}
    with pytest.raises(UserError, match="device 'cpu' is not what it was.*changed: version.*start a new run"):
        _check_same_devices(tmp_path, store, {"cpu": upgraded})
