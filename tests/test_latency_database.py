"""The latency database: reuse across runs under exactly the key latency depends on."""

import sqlite3

import pytest

from hilas.devices import HARNESS_VERSION, LatencyDatabase, TensorSpec, summarize
from hilas.devices.database import ENV_VAR, default_path, inputs_key

INPUTS = (TensorSpec("input", (1, 1, 8, 8)),)


def lat(ms):
    return summarize([[ms, ms * 1.25], [ms]], warmup_runs=1, runtime="test")


@pytest.fixture
def db(tmp_path):
    d = LatencyDatabase(tmp_path / "latency.sqlite")
    yield d
    d.close()


def test_a_measurement_comes_back_under_its_key_only(db):
    db.put("fp-a", {"kind": "x"}, "arch1", INPUTS, lat(2.0))
    assert db.get("fp-a", "arch1", INPUTS) == lat(2.0)
    assert db.get("fp-b", "arch1", INPUTS) is None  # another device or runtime
    assert db.get("fp-a", "arch2", INPUTS) is None  # another structure
    assert db.get("fp-a", "arch1", (TensorSpec("input", (1, 1, 16, 16)),)) is None  # another input shape
    assert db.get("fp-a", "arch1", (TensorSpec("input", (1, 1, 8, 8), "float16"),)) is None  # another dtype


def test_a_newer_measurement_replaces_an_older_one(db):
    db.put("fp", {}, "arch", INPUTS, lat(2.0))
    db.put("fp", {}, "arch", INPUTS, lat(1.0))
    assert db.get("fp", "arch", INPUTS) == lat(1.0) and db.count() == 1


def test_another_harness_version_is_not_reused(db, monkeypatch):
    db.put("fp", {}, "arch", INPUTS, lat(2.0))
    monkeypatch.setattr("hilas.devices.database.HARNESS_VERSION", HARNESS_VERSION + "-next")
    assert db.get("fp", "arch", INPUTS) is None


def test_the_fingerprint_is_kept_beside_the_latencies(db):
    db.put("fp", {"kind": "onnxruntime-cpu", "device": {"cpu_model": "X"}}, "arch", INPUTS, lat(2.0))
    info = db.db.execute("SELECT info FROM fingerprints WHERE fingerprint = 'fp'").fetchone()[0]
    assert '"cpu_model": "X"' in info


def test_the_path_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere.sqlite"))
    assert default_path() == tmp_path / "elsewhere.sqlite"
    assert inputs_key(INPUTS) == "input:1x1x8x8:float32"


def test_an_unwritable_path_says_what_to_do(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=f"cannot open the latency database.*{ENV_VAR}"):
        LatencyDatabase(blocker / "latency.sqlite")


def test_two_runs_can_share_it(tmp_path):
    a, b = LatencyDatabase(tmp_path / "l.sqlite"), LatencyDatabase(tmp_path / "l.sqlite")
    a.put("fp", {}, "arch", INPUTS, lat(2.0))
    assert b.get("fp", "arch", INPUTS) == lat(2.0)
    assert b.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    a.close(), b.close()
    with pytest.raises(sqlite3.ProgrammingError):
        a.get("fp", "arch", INPUTS)


def test_a_database_of_the_first_layout_is_migrated_and_its_measurements_are_reused(tmp_path):
    """hilas 0.1 named the structure key's column arch_key and set no layout version: the file is migrated in
    place, its entries found again."""
    path = tmp_path / "old.sqlite"
    measured = summarize([[1.0, 1.0], [1.0]], warmup_runs=1, runtime="test")
    inputs = (TensorSpec("input", (1, 1, 8, 8)),)
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE fingerprints (fingerprint TEXT PRIMARY KEY, info TEXT NOT NULL,
            created REAL NOT NULL);
        CREATE TABLE latencies (fingerprint TEXT NOT NULL, arch_key TEXT NOT NULL, inputs TEXT NOT NULL,
            harness TEXT NOT NULL, median_ms REAL NOT NULL, latency TEXT NOT NULL, samples BLOB NOT NULL,
            created REAL NOT NULL, PRIMARY KEY (fingerprint, arch_key, inputs, harness));""")
    db.execute("INSERT INTO latencies VALUES ('fp', 'arch1', ?, ?, 1.0, ?, ?, 0)",
               (inputs_key(inputs), HARNESS_VERSION, *measured.to_record()))
    db.commit()
    db.close()
    database = LatencyDatabase(path)
    try:
        assert database.get("fp", "arch1", inputs) == measured
        assert database.db.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        database.close()
    assert LatencyDatabase(path).get("fp", "arch1", inputs) == measured  # and opens again as it is


def test_a_database_of_a_newer_layout_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(OSError, match="written by a newer hilas"):
        LatencyDatabase(path)
