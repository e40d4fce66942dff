"""A prediction cache on SQLite: rows a model version already scored are looked up instead of scored again.

Entries are keyed by a cache space (model name, version and scoring options) and a 128-bit hash of the row's typed
feature values, so a new model version starts empty by construction. Each thread gets its own connection; the
database runs in WAL mode so readers do not block the writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

_HASH_KEYS = ("optiflow-cache-1", "optiflow-cache-2")  # two independent 64-bit row hashes = one 128-bit key


def row_keys(features: pd.DataFrame) -> np.ndarray:
    """(rows, 2) int64: a 128-bit hash of each row's values (column order and dtypes as given)."""
    hashes = [pd.util.hash_pandas_object(features, index=False, hash_key=key).to_numpy() for key in _HASH_KEYS]
    return np.column_stack(hashes).view(np.int64)


class PredictionCache:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS predictions (space TEXT NOT NULL, h1 INTEGER NOT NULL, h2 INTEGER NOT NULL,"
                " probability REAL NOT NULL, reasons TEXT NOT NULL, PRIMARY KEY (space, h1, h2)) WITHOUT ROWID"
            )

    # Scoring chunks on Dask workers carry the cache by its path: each process opens its own connections, and
    # SQLite's file locks (with the 60 s busy timeout) keep writes from several processes one at a time.
    def __getstate__(self) -> dict[str, Path]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Path]) -> None:
        self.path, self._local, self._write_lock = state["path"], threading.local(), threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=60, check_same_thread=True)
            db.execute("PRAGMA synchronous=NORMAL")
        return db

    def get(self, space: str, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[list[str | None]]]:
        """(positions in ``keys`` found, their probabilities, their reason codes)."""
        db = self._connection()
        db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (position INTEGER, h1 INTEGER, h2 INTEGER)")
        db.execute("DELETE FROM wanted")
        db.executemany(
            "INSERT INTO wanted VALUES (?, ?, ?)", ((i, int(a), int(b)) for i, (a, b) in enumerate(keys.tolist()))
        )
        found = db.execute(
            "SELECT w.position, p.probability, p.reasons FROM wanted w JOIN predictions p "
            "ON p.space = ? AND p.h1 = w.h1 AND p.h2 = w.h2 ORDER BY w.position",
            (space,),
        ).fetchall()
        db.commit()
        positions = np.fromiter((row[0] for row in found), dtype=np.int64, count=len(found))
        probabilities = np.fromiter((row[1] for row in found), dtype=float, count=len(found))
        return positions, probabilities, [json.loads(row[2]) for row in found]

    def put(
        self, space: str, keys: np.ndarray, probability: np.ndarray, reasons: Sequence[Sequence[str | None]]
    ) -> None:
        rows = (
            (space, int(a), int(b), float(p), json.dumps(list(codes)))
            for (a, b), p, codes in zip(keys.tolist(), probability.tolist(), reasons, strict=True)
        )
        db = self._connection()
        with self._write_lock:
            db.executemany("INSERT OR IGNORE INTO predictions VALUES (?, ?, ?, ?, ?)", rows)
            db.commit()

    def entries(self, space: str) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM predictions WHERE space = ?", (space,)).fetchone()[0]
