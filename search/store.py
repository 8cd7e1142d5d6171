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
from typing import Iterator

from hilas.devices import Latency

STORE_NAME = "run.sqlite"
SCHEMA_VERSION = 3  # 3: recovered_accuracies gained `before` and `kept` (docs/CHANGELOG.md)
MIGRATIONS = {2: ("ALTER TABLE recovered_accuracies ADD COLUMN before REAL",
                  "ALTER TABLE recovered_accuracies ADD COLUMN kept TEXT NOT NULL DEFAULT 'recovered'")}
KEPT = ("recovered", "before")  # which weights a recovered candidate kept: its recovered ones, or those before

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (device TEXT PRIMARY KEY, kind TEXT NOT NULL, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    candidate INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    arch_key TEXT NOT NULL,
    genome TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS structures (
    arch_key TEXT PRIMARY KEY, params INTEGER NOT NULL, flops INTEGER NOT NULL, widths TEXT NOT NULL,
    dropped TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accuracies (
    key TEXT PRIMARY KEY, status TEXT NOT NULL, accuracy REAL, message TEXT, seconds REAL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS latencies (
    device TEXT NOT NULL, arch_key TEXT NOT NULL, status TEXT NOT NULL,
    median_ms REAL, p90_ms REAL, rounds_cv REAL, n INTEGER, latency TEXT, samples BLOB, message TEXT,
    fingerprint TEXT, source TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (device, arch_key));
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY, evaluations INTEGER NOT NULL, hypervolume TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS recovered_accuracies (
    key TEXT PRIMARY KEY, accuracy REAL NOT NULL, method TEXT NOT NULL, seconds REAL, created REAL NOT NULL,
    before REAL, kept TEXT NOT NULL DEFAULT 'recovered');
"""


@dataclass(frozen=True)
class CandidateRow:
    candidate: int
    key: str
    arch_key: str
    genome: str
    generation: int


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


class Store:
    """Reads and appends the journal of one run."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        schema = self.get("schema") if self._has_table("run") else None
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
        if store.get("schema") != SCHEMA_VERSION:
            found = store.get("schema")
            store.close()
            raise ValueError(f"{run_dir} was written by another version of hilas (store schema {found}, this "
                             f"version reads {SCHEMA_VERSION}); open it with that version or start a new run")
        return store

    def close(self) -> None:
        self.db.close()

    # run metadata -----------------------------------------------------------------------------
    def get(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM run WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO run VALUES (?, ?)", (key, json.dumps(value)))

    def add_device(self, device: str, kind: str, info: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO devices VALUES (?, ?, ?)", (device, kind, json.dumps(info)))

    def devices(self) -> dict[str, dict]:
        return {d: {"kind": k, "info": json.loads(i)} for d, k, i in self.db.execute("SELECT * FROM devices")}

    # journal ----------------------------------------------------------------------------------
    def add_candidate(self, key: str, arch_key: str, genome: str, generation: int) -> int:
        """The candidate's id; a key seen before keeps its first id (a genome is evaluated once)."""
        self.db.execute("INSERT OR IGNORE INTO candidates (key, arch_key, genome, generation, created) "
                        "VALUES (?, ?, ?, ?, ?)", (key, arch_key, genome, generation, time.time()))
        return self.db.execute("SELECT candidate FROM candidates WHERE key = ?", (key,)).fetchone()[0]

    def add_structure(self, arch_key: str, params: int, flops: int, widths: dict, dropped: list) -> None:
        self.db.execute("INSERT OR IGNORE INTO structures VALUES (?, ?, ?, ?, ?)",
                        (arch_key, params, flops, json.dumps(widths), json.dumps(dropped)))

    def structure(self, arch_key: str) -> dict | None:
        row = self.db.execute("SELECT params, flops, widths, dropped FROM structures WHERE arch_key = ?",
                              (arch_key,)).fetchone()
        if row is None:
            return None
        return {"params": row[0], "flops": row[1], "widths": json.loads(row[2]), "dropped": json.loads(row[3])}

    def add_accuracy(self, key: str, accuracy: float | None, *, status: str = "ok", message: str | None = None,
                     seconds: float | None = None) -> None:
        if (accuracy is None) == (status == "ok"):
            raise ValueError("an accuracy is stored exactly when status is 'ok'")
        self.db.execute("INSERT INTO accuracies VALUES (?, ?, ?, ?, ?, ?)",
                        (key, status, accuracy, message, seconds, time.time()))

    def accuracy(self, key: str) -> tuple[str, float | None, str | None] | None:
        return self.db.execute("SELECT status, accuracy, message FROM accuracies WHERE key = ?", (key,)).fetchone()

    def add_recovered_accuracy(self, key: str, accuracy: float, *, method: str, before: float | None = None,
                               kept: str = "recovered", seconds: float | None = None) -> None:
        """Top-1 of a candidate after recovery (`method` says how, e.g. few-shot distillation), on the
        same validation split as its proxy accuracy, which stays as it was; `before` is its top-1 before
        recovery and `kept` which weights it kept. A candidate recovered again (with other settings)
        keeps the latest result."""
        if kept not in KEPT:
            raise ValueError(f"kept must be one of {', '.join(KEPT)}, got {kept!r}")
        self.db.execute("INSERT OR REPLACE INTO recovered_accuracies (key, accuracy, method, seconds, created, "
                        "before, kept) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (key, accuracy, method, seconds, time.time(), before, kept))

    def recovered_accuracy(self, key: str) -> RecoveredRow | None:
        """What recovery made of a candidate, or None if it was not recovered."""
        row = self.db.execute("SELECT accuracy, method, before, kept, seconds FROM recovered_accuracies WHERE key = ?",
                              (key,)).fetchone()
        return RecoveredRow(*row) if row else None

    def recovered(self, method: str) -> list[RecoveredRow]:
        """Every candidate recovered by `method`."""
        return [RecoveredRow(*row) for row in self.db.execute(
            "SELECT accuracy, method, before, kept, seconds FROM recovered_accuracies WHERE method = ?", (method,))]

    def recovery_methods(self) -> list[str]:
        return [m for (m,) in self.db.execute("SELECT DISTINCT method FROM recovered_accuracies ORDER BY method")]

    def add_latency(self, device: str, arch_key: str, latency: Latency | None, *, status: str = "ok",
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
                        (device, arch_key, status, *numbers, *record, message, fingerprint, source, time.time()))

    def forget_lost_device_failures(self) -> int:
        """Drop failures that blamed a lost device, not the model, so a resumed run measures them again."""
        return self.db.execute("DELETE FROM latencies WHERE status = 'device'").rowcount

    def latency(self, device: str, arch_key: str, *, samples: bool = False) -> LatencyRow | None:
        """The stored measurement; its raw samples are read only if asked for (the search needs none)."""
        row = self.db.execute(f"SELECT status, latency, {'samples' if samples else 'NULL'}, message, source "
                              "FROM latencies WHERE device = ? AND arch_key = ?", (device, arch_key)).fetchone()
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
        for row in self.db.execute("SELECT candidate, key, arch_key, genome, generation FROM candidates "
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
