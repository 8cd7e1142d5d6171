"""The latency database: measurements kept across runs, so a structure is measured once per device.

Latency depends on structure, never on weights, so a measurement is reusable by any later run on
the same device with the same runtime. The key says exactly that: (fingerprint of the device and
its runtime with options, structure_key, input shapes and dtypes, harness version). A changed CPU,
driver, runtime version or option, or a new harness, is a different key and is measured afresh.
Only successful measurements are kept; failures may be transient and are measured again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from .artifact import TensorSpec
from .latency import HARNESS_VERSION, Latency

ENV_VAR = "HILAS_LATENCY_DB"

# PRAGMA user_version: 0 for files of hilas 0.1 (structure keys in a column named arch_key), 1 now.
SCHEMA_VERSION = 1
_MIGRATIONS = {0: ("ALTER TABLE latencies RENAME COLUMN arch_key TO structure_key",)}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (fingerprint TEXT PRIMARY KEY, info TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS latencies (
    fingerprint TEXT NOT NULL, structure_key TEXT NOT NULL, inputs TEXT NOT NULL, harness TEXT NOT NULL,
    median_ms REAL NOT NULL, latency TEXT NOT NULL, samples BLOB NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (fingerprint, structure_key, inputs, harness));
"""


def default_path() -> Path:
    """$HILAS_LATENCY_DB, else latency.sqlite in the user data directory."""
    from platformdirs import user_data_dir

    return Path(os.environ.get(ENV_VAR) or Path(user_data_dir("hilas")) / "latency.sqlite")


def inputs_key(inputs: tuple[TensorSpec, ...]) -> str:
    """Input names, shapes and dtypes as one string, e.g. "input:1x3x32x32:float32"."""
    return ",".join(f"{s.name}:{'x'.join(map(str, s.shape))}:{s.dtype}" for s in inputs)


class LatencyDatabase:
    """A SQLite file shared by every run of this user (WAL: several runs may use it at once)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise OSError(f"cannot open the latency database {self.path}: {e}; set {ENV_VAR} to a writable "
                          f"file, or run with --fresh") from e

    def _migrate(self) -> None:
        """Bring a file of an older layout to this one, in one transaction; a new file just gets the version."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"it was written by a newer hilas (layout {version}, this one reads up to "
                                        f"{SCHEMA_VERSION})")
        exists = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'latencies'").fetchone() is not None
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step] if exists else ():
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def get(self, fingerprint: str, structure_key: str, inputs: tuple[TensorSpec, ...]) -> Latency | None:
        row = self.db.execute(
            "SELECT latency, samples FROM latencies WHERE fingerprint = ? AND structure_key = ? AND inputs = ? "
            "AND harness = ?", (fingerprint, structure_key, inputs_key(inputs), HARNESS_VERSION)).fetchone()
        if row is None:
            return None
        return Latency.from_record(row[0], row[1])

    def put(self, fingerprint: str, info: dict, structure_key: str, inputs: tuple[TensorSpec, ...],
            latency: Latency) -> None:
        """Keep a successful measurement (a newer one replaces an older one under the same key)."""
        now = time.time()
        self.db.execute("BEGIN")
        self.db.execute("INSERT OR IGNORE INTO fingerprints VALUES (?, ?, ?)",
                        (fingerprint, json.dumps(info, sort_keys=True, default=str), now))
        self.db.execute("INSERT OR REPLACE INTO latencies VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (fingerprint, structure_key, inputs_key(inputs), latency.harness, latency.median_ms,
                         *latency.to_record(), now))
        self.db.execute("COMMIT")

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM latencies").fetchone()[0]

