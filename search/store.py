"""One SQLite file per run: the frozen config and an append-only journal of results.

Every accuracy and every latency is committed the moment it is known, so a run killed at any
point loses nothing finished; `resume` replays the search and answers from here instead of
evaluating again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Iterator, TypeVar, overload

from hilas.devices.latency import Latency
from hilas.search.errors import UserError

T = TypeVar("T")

STORE_NAME = "run.sqlite"
SCHEMA_VERSION = 4  # the changes, version by version: CHANGELOG.md
MIGRATIONS = {  # schema -> the statements that bring it to schema + 1
    2: ("ALTER TABLE recovered_accuracies ADD COLUMN before REAL",
        "ALTER TABLE recovered_accuracies ADD COLUMN kept TEXT NOT NULL DEFAULT 'recovered'"),
    3: tuple(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}" for table, old, new in (
        ("candidates", "key", "model_key"), ("candidates", "arch_key", "structure_key"),
        ("structures", "arch_key", "structure_key"), ("accuracies", "key", "model_key"),
        ("latencies", "arch_key", "structure_key"), ("recovered_accuracies", "key", "model_key"))),
}
KEPT = ("recovered", "before")  # which weights a recovered candidate kept: its recovered ones, or those before

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (device TEXT PRIMARY KEY, kind TEXT NOT NULL, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    candidate INTEGER PRIMARY KEY,
    model_key TEXT NOT NULL UNIQUE,
    structure_key TEXT NOT NULL,
    genome TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS structures (
    structure_key TEXT PRIMARY KEY, params INTEGER NOT NULL, flops INTEGER NOT NULL, widths TEXT NOT NULL,
    dropped TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accuracies (
    model_key TEXT PRIMARY KEY, status TEXT NOT NULL, accuracy REAL, message TEXT, seconds REAL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS latencies (
    device TEXT NOT NULL, structure_key TEXT NOT NULL, status TEXT NOT NULL,
    median_ms REAL, p90_ms REAL, rounds_cv REAL, n INTEGER, latency TEXT, samples BLOB, message TEXT,
    fingerprint TEXT, source TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (device, structure_key));
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY, evaluations INTEGER NOT NULL, hypervolume TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS recovered_accuracies (
    model_key TEXT PRIMARY KEY, accuracy REAL NOT NULL, method TEXT NOT NULL, seconds REAL, created REAL NOT NULL,
    before REAL, kept TEXT NOT NULL DEFAULT 'recovered');
"""


@dataclass(frozen=True)
class CandidateRow:
    candidate: int
    model_key: str
    structure_key: str
    genome: str
    generation: int


@dataclass(frozen=True)
class ScoredRow:
    """A candidate with an accuracy (the search's, or after recovery) and a successful latency on one device:
    `latency` is the stored summary (Latency.from_record reads it)."""

    candidate: int
    model_key: str
    structure_key: str
    accuracy: float
    latency: str
    params: int
    flops: int
    kept: str | None  # after recovery: which weights the candidate kept; None for the search's accuracy


@dataclass(frozen=True)
class RecoveredRow:
    """A candidate after `front recover`: its top-1 with the weights it kept, how it was recovered, its top-1
    before recovery, and which weights it kept ("recovered", or "before" where recovery scored lower)."""

    accuracy: float
    method: str
    before: float | None
    kept: str
    seconds: float | None


@dataclass(frozen=True)
class LatencyRow:
    """A stored measurement: `latency` is set when `status` is "ok", else `message` says what failed.

    `source` is "measured" (in this run) or "database" (reused from the latency database). A
    noisy failure keeps its timings as `evidence`; they are never an objective.
    """

    status: str
    latency: Latency | None
    message: str | None
    source: str = "measured"
    evidence: Latency | None = None


def is_run_dir(path: Path) -> bool:
    return (Path(path) / STORE_NAME).is_file()


class RunField(Generic[T]):
    """One named value of the run (its config, its split, its status...), read and written as an attribute of
    the store: `store.status = "finished"`. Reads `default` where it was never written."""

    def __init__(self, default: T | None = None):
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, store: None, owner: type) -> RunField[T]: ...
    @overload
    def __get__(self, store: Store, owner: type) -> T: ...
    def __get__(self, store: Store | None, owner: type) -> Any:
        if store is None:
            return self
        row = store.db.execute("SELECT value FROM run WHERE key = ?", (self.key,)).fetchone()
        return json.loads(row[0]) if row else self.default

    def __set__(self, store: Store, value: T) -> None:
        store.db.execute("INSERT OR REPLACE INTO run VALUES (?, ?)", (self.key, json.dumps(value)))


class Store:
    """Reads and appends the journal of one run: the only code that speaks SQL to it."""

    # what the run is: written when it starts
    schema: RunField[int] = RunField()
    config: RunField[dict] = RunField()  # RunConfig.to_dict()
    split: RunField[dict] = RunField()  # the data split (see setup.inputs.describe_split)
    created: RunField[float] = RunField()
    reference_accuracy: RunField[float] = RunField()  # the original model's top-1 on the validation split
    # what the run has done
    status: RunField[str] = RunField()  # "running", "finished" or "stopped"
    resumed: RunField[float] = RunField()
    baseline_key: RunField[str] = RunField()  # the unpruned model's key
    summary: RunField[dict] = RunField({})  # what its last session did (Search.summary)
    drop_recoverability: RunField[dict] = RunField()  # per droppable block: recovered error, ms saved
    recovery: RunField[dict] = RunField()  # the latest `front recover` settings

    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        schema = self.schema if self._has_table("run") else None
        if schema in MIGRATIONS:
            self._migrate(schema)
        self.db.executescript(_SCHEMA)

    def _has_table(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() \
            is not None

    def _migrate(self, schema: int) -> None:
        """Bring a store of an older schema up to this one, in one transaction (all or nothing)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            while schema in MIGRATIONS:
                for statement in MIGRATIONS[schema]:
                    self.db.execute(statement)
                schema += 1
            self.db.execute("UPDATE run SET value = ? WHERE key = 'schema'", (json.dumps(schema),))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @classmethod
    def create(cls, run_dir: Path, config: dict, split: dict) -> "Store":
        """A new run directory with its frozen config. Refuses a directory that already holds a run."""
        run_dir = Path(run_dir)
        if is_run_dir(run_dir):
            raise FileExistsError(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        store = cls(run_dir / STORE_NAME)
        store.db.execute("BEGIN")
        for key, value in {"schema": SCHEMA_VERSION, "config": config, "split": split, "status": "running",
                           "created": time.time()}.items():
            store.db.execute("INSERT INTO run VALUES (?, ?)", (key, json.dumps(value)))
        store.db.execute("COMMIT")
        return store

    @classmethod
    def open(cls, run_dir: Path) -> "Store":
        """An existing run's store. Raises FileNotFoundError, or ValueError for another schema."""
        if not is_run_dir(run_dir):
            raise FileNotFoundError(Path(run_dir) / STORE_NAME)
        store = cls(Path(run_dir) / STORE_NAME)
        if store.schema != SCHEMA_VERSION:
            found = store.schema
            store.close()
            raise ValueError(f"{run_dir} was written by another version of hilas (store schema {found}, this "
                             f"version reads {SCHEMA_VERSION}); open it with that version or start a new run")
        return store

    def close(self) -> None:
        self.db.close()

    # run metadata -----------------------------------------------------------------------------
    def add_device(self, device: str, kind: str, info: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO devices VALUES (?, ?, ?)", (device, kind, json.dumps(info)))

    def devices(self) -> dict[str, dict]:
        return {d: {"kind": k, "info": json.loads(i)} for d, k, i in self.db.execute("SELECT * FROM devices")}

    # journal ----------------------------------------------------------------------------------
    def add_candidate(self, model_key: str, structure_key: str, genome: str, generation: int) -> int:
        """The candidate's id; a model key seen before keeps its first id (a model is evaluated once)."""
        self.db.execute("INSERT OR IGNORE INTO candidates (model_key, structure_key, genome, generation, created) "
                        "VALUES (?, ?, ?, ?, ?)", (model_key, structure_key, genome, generation, time.time()))
        return self.db.execute("SELECT candidate FROM candidates WHERE model_key = ?", (model_key,)).fetchone()[0]

    def add_structure(self, structure_key: str, params: int, flops: int, widths: dict, dropped: list) -> None:
        self.db.execute("INSERT OR IGNORE INTO structures VALUES (?, ?, ?, ?, ?)",
                        (structure_key, params, flops, json.dumps(widths), json.dumps(dropped)))

    def structure(self, structure_key: str) -> dict | None:
        row = self.db.execute("SELECT params, flops, widths, dropped FROM structures WHERE structure_key = ?",
                              (structure_key,)).fetchone()
        if row is None:
            return None
        return {"params": row[0], "flops": row[1], "widths": json.loads(row[2]), "dropped": json.loads(row[3])}

    def add_accuracy(self, model_key: str, accuracy: float | None, *, status: str = "ok", message: str | None = None,
                     seconds: float | None = None) -> None:
        if (accuracy is None) == (status == "ok"):
            raise ValueError("an accuracy is stored exactly when status is 'ok'")
        self.db.execute("INSERT INTO accuracies VALUES (?, ?, ?, ?, ?, ?)",
                        (model_key, status, accuracy, message, seconds, time.time()))

    def accuracy(self, model_key: str) -> tuple[str, float | None, str | None] | None:
        return self.db.execute("SELECT status, accuracy, message FROM accuracies WHERE model_key = ?",
                               (model_key,)).fetchone()

    def add_recovered_accuracy(self, model_key: str, accuracy: float, *, method: str, before: float | None = None,
                               kept: str = "recovered", seconds: float | None = None) -> None:
        """Top-1 of a candidate after recovery (`method` says how, e.g. few-shot distillation), on the
        same validation split as its proxy accuracy, which stays as it was; `before` is its top-1 before
        recovery and `kept` which weights it kept. A candidate recovered again (with other settings)
        keeps the latest result."""
        if kept not in KEPT:
            raise ValueError(f"kept must be one of {', '.join(KEPT)}, got {kept!r}")
        self.db.execute("INSERT OR REPLACE INTO recovered_accuracies (model_key, accuracy, method, seconds, created, "
                        "before, kept) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (model_key, accuracy, method, seconds, time.time(), before, kept))

    def recovered_accuracy(self, model_key: str) -> RecoveredRow | None:
        """What recovery made of a candidate, or None if it was not recovered."""
        row = self.db.execute("SELECT accuracy, method, before, kept, seconds FROM recovered_accuracies "
                              "WHERE model_key = ?", (model_key,)).fetchone()
        return RecoveredRow(*row) if row else None

    def recovered(self, method: str) -> list[RecoveredRow]:
        """Every candidate recovered by `method`."""
        return [RecoveredRow(*row) for row in self.db.execute(
            "SELECT accuracy, method, before, kept, seconds FROM recovered_accuracies WHERE method = ?", (method,))]

    def scored(self, device: str, *, recovered: bool) -> list[ScoredRow]:
        """Every candidate with a successful latency on `device` and a successful accuracy: the search's, or
        (`recovered`) its accuracy after recovery. By candidate id."""
        accuracy = ("recovered_accuracies a ON a.model_key = c.model_key" if recovered
                    else "accuracies a ON a.model_key = c.model_key AND a.status = 'ok'")
        sql = f"""SELECT c.candidate, c.model_key, c.structure_key, a.accuracy, l.latency, s.params, s.flops,
                         {'a.kept' if recovered else 'NULL'}
                  FROM candidates c JOIN {accuracy}
                  JOIN latencies l ON l.structure_key = c.structure_key AND l.device = ? AND l.status = 'ok'
                  JOIN structures s ON s.structure_key = c.structure_key ORDER BY c.candidate"""
        return [ScoredRow(*row) for row in self.db.execute(sql, (device,))]

    def recovery_methods(self) -> list[str]:
        return [m for (m,) in self.db.execute("SELECT DISTINCT method FROM recovered_accuracies ORDER BY method")]

    def add_latency(self, device: str, structure_key: str, latency: Latency | None, *, status: str = "ok",
                    message: str | None = None, fingerprint: str | None = None, source: str = "measured",
                    evidence: Latency | None = None) -> None:
        """A measurement, or a failure (status names its kind). A failure never stores a number as a
        latency: a noisy one keeps its timings only as evidence, with no median in the table."""
        if (latency is None) == (status == "ok"):
            raise ValueError("a latency is stored exactly when status is 'ok'")
        if evidence is not None and status == "ok":
            raise ValueError("evidence belongs to a failure; a success stores its latency")
        kept = latency or evidence
        record = kept.to_record() if kept else (None, None)
        numbers = (latency.median_ms, latency.p90_ms, latency.rounds_cv, latency.n) if latency else (None,) * 4
        self.db.execute("INSERT INTO latencies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (device, structure_key, status, *numbers, *record, message, fingerprint, source, time.time()))

    def forget_lost_device_failures(self) -> int:
        """Drop failures that blamed a lost device, not the model, so a resumed run measures them again."""
        return self.db.execute("DELETE FROM latencies WHERE status = 'device'").rowcount

    def latency(self, device: str, structure_key: str, *, samples: bool = False) -> LatencyRow | None:
        """The stored measurement; its raw samples are read only if asked for (the search needs none)."""
        row = self.db.execute(f"SELECT status, latency, {'samples' if samples else 'NULL'}, message, source "
                              "FROM latencies WHERE device = ? AND structure_key = ?",
                              (device, structure_key)).fetchone()
        if row is None:
            return None
        status, summary, blob, message, source = row
        kept = Latency.from_record(summary, blob) if summary else None
        return LatencyRow(status, kept if status == "ok" else None, message, source,
                          kept if status != "ok" else None)

    def add_generation(self, generation: int, evaluations: int, hypervolume: dict[str, float]) -> None:
        self.db.execute("INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?)",
                        (generation, evaluations, json.dumps(hypervolume), time.time()))

    def generations(self) -> list[tuple[int, int, dict[str, float]]]:
        return [(g, n, json.loads(h)) for g, n, h in
                self.db.execute("SELECT generation, evaluations, hypervolume FROM generations ORDER BY generation")]

    def candidates(self) -> Iterator[CandidateRow]:
        for row in self.db.execute("SELECT candidate, model_key, structure_key, genome, generation FROM candidates "
                                   "ORDER BY candidate"):
            yield CandidateRow(*row)

    def counts(self) -> dict[str, int]:
        one = lambda sql: self.db.execute(sql).fetchone()[0]  # noqa: E731
        return {"candidates": one("SELECT COUNT(*) FROM candidates"),
                "accuracies": one("SELECT COUNT(*) FROM accuracies"),
                "measurements": one("SELECT COUNT(*) FROM latencies WHERE status = 'ok'"),
                "from_database": one("SELECT COUNT(*) FROM latencies WHERE status = 'ok' AND source = 'database'"),
                "failures": one("SELECT COUNT(*) FROM latencies WHERE status != 'ok'")
                + one("SELECT COUNT(*) FROM accuracies WHERE status != 'ok'")}


def open_run(run_dir: Path) -> Store:
    """The store of an existing run directory; one line (UserError) for a missing, foreign or other-version one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a hilas run (no run.sqlite in it)")
    try:
        return Store.open(run_dir)
    except ValueError as e:
        raise UserError(str(e)) from None


def list_runs(root: Path) -> list[dict]:
    """Every run directory directly under `root` (or `root` itself), newest first."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"directory not found: {root}")
    dirs = [root] if is_run_dir(root) else sorted(p for p in root.iterdir() if is_run_dir(p))
    out = []
    for d in dirs:
        try:
            store = open_run(d)
        except UserError as e:
            out.append({"run": str(d), "status": f"unreadable: {e}", "created": d.stat().st_mtime, "devices": [],
                        "budget": 0, "candidates": 0, "measurements": 0, "from_database": 0, "failures": 0})
            continue
        try:
            cfg = store.config
            out.append({"run": str(d), "status": store.status, "created": store.created,
                        "devices": cfg["devices"], "budget": cfg["budget"], **store.counts()})
        finally:
            store.close()
    return sorted(out, key=lambda r: r["created"], reverse=True)
