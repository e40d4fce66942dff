"""The prediction log: every score serve-api computes (the answer, and the other model's score during a release),
with its request id, row, model version, role, latency and the entity's key, plus the labels that arrive later.

One SQLAlchemy Core schema for SQLite (the default, a file at paths.prediction_log, WAL mode so the release flow
reads while the API writes) and PostgreSQL (release.prediction_log). The API never waits on the database: `record`
appends to an in-memory queue that one writer thread flushes in batches (every `flush_rows` rows or
`flush_seconds`); when the queue is full, records are dropped and counted, never blocking a request.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

from optiflow.config import Config
from optiflow.io import resolve_database_uri

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"  # a record's role: which alias scored it

_METADATA = sa.MetaData()
PREDICTIONS = sa.Table(
    "predictions",
    _METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("row", sa.Integer, nullable=False),  # position in the request
    sa.Column("at", sa.Float, nullable=False, index=True),  # unix time the request arrived
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("answered", sa.Boolean, nullable=False),  # this score was the response (not a shadow score)
    sa.Column("entity_key", sa.String(128), nullable=False, index=True),
    sa.Column("probability", sa.Float, nullable=True),  # null when scoring failed
    sa.Column("label", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),  # the scoring call's time (the whole batch it ran in)
    sa.Column("error", sa.String(300), nullable=True),
)
LABELS = sa.Table(
    "labels",
    _METADATA,
    sa.Column("entity_key", sa.String(128), primary_key=True),
    sa.Column("label", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class Record:
    """One model's score of one row of one request."""

    request_id: str
    row: int
    at: float
    model_version: str
    role: str
    answered: bool
    entity_key: str
    probability: float | None
    label: int | None
    latency_ms: float
    error: str | None = None


def log_url(config: Config) -> str:
    """release.prediction_log, or SQLite at paths.prediction_log (an absolute URL, whatever the working folder)."""
    configured = config.params.release.prediction_log
    if configured:
        return str(resolve_database_uri(configured, config.root))
    path = config.path("prediction_log")
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_engine(url: str) -> sa.Engine:
    """An engine with the tables created; SQLite in WAL mode with a busy timeout (one writer, many readers)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _wal(connection: Any, _record: Any) -> None:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")

    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    _METADATA.create_all(engine)
    return engine


class PredictionLog:
    """Batched, non-blocking writes from serve-api; reads and label joins for the release flow."""

    def __init__(self, url: str, flush_rows: int = 500, flush_seconds: float = 1.0, max_queued: int = 200_000) -> None:
        self.engine = open_engine(url)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.pending: queue.Queue[Record] = queue.Queue(maxsize=max_queued)
        self.dropped = 0
        self.written = 0
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> PredictionLog:
        """Start the writer thread (serve-api); without it, call `flush` yourself."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_forever, name="prediction-log", daemon=True)
            self._writer.start()
        return self

    def record(self, records: Iterable[Record]) -> None:
        """Queue records for the writer; never blocks (a full queue drops and counts them)."""
        for item in records:
            try:
                self.pending.put_nowait(item)
            except queue.Full:
                self.dropped += 1

    def flush(self) -> int:
        """Write everything queued now, in one transaction; the number of rows written."""
        batch: list[dict[str, Any]] = []
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(dict(vars(self.pending.get_nowait())))  # asdict deep-copies: 8x slower
        if batch:
            with self.engine.begin() as connection:
                connection.execute(sa.insert(PREDICTIONS), batch)
            self.written += len(batch)
        return len(batch)

    def close(self) -> None:
        """Stop the writer after a last flush; the records queued so far are written."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout=30)
            self._writer = None
        self.flush()
        self.engine.dispose()

    def _write_forever(self) -> None:
        while not self._stop.is_set():
            deadline = time.monotonic() + self.flush_seconds
            while self.pending.qsize() < self.flush_rows and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.02)
            try:
                self.flush()
            except Exception as exc:  # a database hiccup loses this batch, never the API
                log.warning("prediction log: a batch was not written (%s: %s)", type(exc).__name__, exc)

    def add_labels(self, labels: Iterable[tuple[str, int]]) -> int:
        """Store (entity key, label) pairs; a key labelled again keeps its newest label. The number stored."""
        now = time.time()
        rows = {str(key): int(label) for key, label in labels}
        if not rows:
            return 0
        with self.engine.begin() as connection:
            keys = list(rows)
            for start in range(0, len(keys), 500):
                connection.execute(sa.delete(LABELS).where(LABELS.c.entity_key.in_(keys[start : start + 500])))
            connection.execute(
                sa.insert(LABELS), [{"entity_key": key, "label": label, "at": now} for key, label in rows.items()]
            )
        return len(rows)

    def read(self, since: float | None = None, versions: Sequence[str] | None = None) -> pd.DataFrame:
        """The logged scores (optionally from ``since`` and of ``versions`` only), each with its entity's label
        (``outcome``, missing until one arrives)."""
        query = sa.select(PREDICTIONS, LABELS.c.label.label("outcome")).outerjoin(
            LABELS, PREDICTIONS.c.entity_key == LABELS.c.entity_key
        )
        if since is not None:
            query = query.where(PREDICTIONS.c.at >= since)
        if versions is not None:
            query = query.where(PREDICTIONS.c.model_version.in_(list(versions)))
        with self.engine.connect() as connection:
            frame = pd.read_sql(query.order_by(PREDICTIONS.c.id), connection)
        return frame.drop(columns=["id"])


@contextlib.contextmanager
def opened(config: Config) -> Iterator[PredictionLog]:
    """The project's prediction log for reading or labelling, closed afterwards."""
    prediction_log = PredictionLog(log_url(config))
    try:
        yield prediction_log
    finally:
        prediction_log.close()
