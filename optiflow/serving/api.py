"""`optiflow serve-api`: the champion over HTTP, kept in memory, with concurrent requests grouped into micro-batches.

While one batch is scored (in a worker thread), new requests queue up; the next batch takes all of them (up to
``serve.max_batch_size`` rows) in one ``predict_proba`` call, so per-call overhead (pandas, the column transformer) is
paid once per batch instead of once per request. Under load (the last batch was shared) a batch also waits up to
``serve.max_wait_ms`` to fill; a lone request is never held back. The batch runs the same row checks and the same
prediction cache as batch scoring. A background task polls the registry and swaps in a new champion when the alias
moves; the swap is one reference assignment, so in-flight batches finish on the model they started with.
Against model extraction (docs/security.md) it can limit requests per client and round the probabilities it returns.

During a release (optiflow.release.rollout) the same poll loads the challenger next to the champion. In shadow mode
the champion answers every row; in canary mode a stable hash of each row's entity key picks which model answers it.
Either way the model that did not answer scores the row too, off the response path (one thread, a bounded queue that
drops and counts under overload), and every score goes to the prediction log with the request id and the entity key,
so labels sent later to ``POST /feedback`` join them. A failing challenger never fails a request: a canary row falls
back to the champion, and the failure is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import ipaddress
import logging
import queue
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, create_model
from starlette.requests import ClientDisconnect

from optiflow.config import Config, ServeParams
from optiflow.errors import ConfigError
from optiflow.release.registry import StoreWatch, gates_warning, resolve_version
from optiflow.release.rollout import ReleaseState, release_state
from optiflow.serving.batch import LABEL, PROBABILITY, REASON, Scorer, load_model, make_scorer
from optiflow.serving.cache import PredictionCache
from optiflow.serving.prediction_log import CHALLENGER, CHAMPION, PredictionLog, Record, log_url
from optiflow.serving.routing import entity_key, key_column, to_challenger

log = logging.getLogger(__name__)

_PYTHON_TYPES = {"float": float, "int": int, "uint": int, "bool": bool}


def request_model(scorer: Scorer, max_rows: int, key_column: str | None = None) -> type[BaseModel]:
    """The request body: {"rows": [{feature: value, ...}], "reasons": bool}, typed from the model's features; a row
    may also name its entity in ``key_column`` (release.key_column), text or a whole number."""
    fields: dict[str, Any] = {}
    if key_column is not None and key_column not in scorer.spec.features:
        fields[key_column] = (EntityKey | None, None)
    for column in scorer.spec.features:
        kind = next(
            (python for prefix, python in _PYTHON_TYPES.items() if scorer.spec.dtypes[column].startswith(prefix)), str
        )
        fields[column] = (
            Annotated[kind | None, BeforeValidator(_no_bool)] if kind in (int, float) else kind | None,
            ...,
        )
    row = create_model("Row", __config__=ConfigDict(extra="ignore"), **fields)
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        rows=(list[row], Field(min_length=1, max_length=max_rows)),
        reasons=(bool, False),
    )


def _no_bool(value: Any) -> Any:
    """JSON true/false is not a number (pydantic would read it as 1/0)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


def _key_text(value: Any) -> Any:
    """Entity keys are text; a whole-number id (customer 1042) is read as its digits."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


EntityKey = Annotated[str, BeforeValidator(_key_text), StringConstraints(min_length=1, max_length=128)]


def feedback_model(max_labels: int) -> type[BaseModel]:
    """The body of POST /feedback: {"labels": [{"key": entity key, "label": 0 or 1}, ...]}."""
    label = create_model(
        "Label",
        __config__=ConfigDict(extra="forbid"),
        key=(EntityKey, ...),
        label=(Annotated[Literal[0, 1], BeforeValidator(_no_bool)], ...),
    )
    return create_model(
        "FeedbackRequest",
        __config__=ConfigDict(extra="forbid"),
        labels=(list[label], Field(min_length=1, max_length=max_labels)),
    )


class RowsRejected(Exception):
    """Rows of one request broke the training schema's rules (ranges, domains, nulls)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(problems)
        self.problems = problems


@dataclass
class Served:
    """What the server holds now; replaced as a whole on reload."""

    scorer: Scorer  # reasons = 0
    explainer: Scorer  # the same model with reason codes
    alias: str
    device: str
    meta: dict[str, Any]
    lineage: dict[str, str]  # the version's public lineage tags (PUBLIC_LINEAGE): hashes, no paths or users
    schema: type[BaseModel]
    runtime: str  # "onnx" (the version's parity-checked graph on ONNX Runtime) or "python"
    warning: str | None  # why this version should not be serving (it failed its gates), else None


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    rows: int = 0
    cache_hits: int = 0
    reloads: int = 0
    requests_per_batch: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "rows": self.rows,
            "cache_hits": self.cache_hits,
            "reloads": self.reloads,
            "max_requests_per_batch": max(self.requests_per_batch, default=0),
            "requests_per_batch": {str(size): count for size, count in sorted(self.requests_per_batch.items())},
        }


@dataclass(frozen=True)
class Live:
    """A running shadow or canary release as the server holds it: the registry's state and the loaded challenger."""

    state: ReleaseState
    challenger: Served


@dataclass
class ReleaseStats:
    """What the release did to traffic since startup (/metrics)."""

    canary_rows: int = 0  # rows the challenger answered
    shadow_rows: int = 0  # rows scored off the response path (by the model that did not answer them)
    shadow_jobs_dropped: int = 0  # off-path batches dropped because the queue was full
    challenger_errors: int = 0  # rows the challenger failed to score (answered by the champion instead, or lost)
    champion_shadow_errors: int = 0  # rows the champion failed to score off the path (canary rows)

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Answer:
    model_version: str  # the champion's version when the batch ran (in a canary each row names its own)
    predictions: list[dict[str, Any]]  # per row: probability, label, reasons when asked, model_version in a canary


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    reasons: bool
    future: asyncio.Future
    request_id: str
    arrived: float  # unix time
    keys: list[str]  # each row's entity key


@dataclass(frozen=True)
class _Origin:
    """Where a row came from, for its log record."""

    request_id: str
    row: int
    arrived: float
    key: str


@dataclass(frozen=True)
class ShadowJob:
    """Rows answered by one model, to be scored by the other off the response path."""

    scorer: Scorer
    role: str
    rows: pd.DataFrame | list[dict[str, Any]]  # typed rows that passed the scorer's own row rules, or raw rows
    origins: list[_Origin]

    @property
    def checked(self) -> bool:
        return isinstance(self.rows, pd.DataFrame)


SHADOW_QUEUE_BATCHES = 256  # off-path backlog, in micro-batches, before new ones are dropped (and counted)
# The off-path thread waits this long for more rows of one model, up to SHADOW_BATCHES micro-batches' worth: a call
# costs about the same for 17 rows as for 170 (pandas and the model's per-call work), and it competes for the GIL.
SHADOW_GATHER_SECONDS = 0.25
SHADOW_BATCHES = 4
WARN_EVERY = 100  # one warning per this many failing scoring calls of a model


class ShadowScorer:
    """Scores rows with the model that did not answer them, on its own thread: the answer never waits for it. The
    queue is bounded (a burst drops whole jobs and counts them); queued jobs of one model are scored together, so
    under load the off-path work gets cheaper per row, as micro-batches do. Every score or failure is logged."""

    def __init__(self, prediction_log: PredictionLog, stats: ReleaseStats, max_rows: int) -> None:
        self.log, self.stats, self.max_rows = prediction_log, stats, max_rows * SHADOW_BATCHES
        self.jobs: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=SHADOW_QUEUE_BATCHES)
        self.failures: Counter = Counter()  # failing calls per role, for one warning per WARN_EVERY
        self._thread = threading.Thread(target=self._run, name="shadow-score", daemon=True)
        self._thread.start()

    def submit(self, job: ShadowJob) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            self.stats.shadow_jobs_dropped += 1

    def close(self) -> None:
        """Stop after the job in hand; what is still queued is not scored (counted as dropped)."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.jobs.get_nowait()
                self.stats.shadow_jobs_dropped += 1
        self.jobs.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        one_native_thread()
        carry: ShadowJob | None = None
        while True:
            job = carry or self.jobs.get()
            carry = None
            if job is None:
                return
            together, size, stop = [job], len(job.origins), False
            deadline = time.monotonic() + SHADOW_GATHER_SECONDS
            with contextlib.suppress(queue.Empty):
                while size < self.max_rows:
                    more = self.jobs.get(timeout=max(deadline - time.monotonic(), 0.0))
                    if more is None:
                        stop = True
                        break
                    if more.scorer is not job.scorer or more.checked != job.checked:
                        carry = more
                        break
                    together.append(more)
                    size += len(more.origins)
            self.log.record(self.score(_merged(together)))
            if stop:
                return

    def score(self, job: ShadowJob) -> list[Record]:
        """The job's log records: a score per row, or the reason it has none."""
        started = time.perf_counter()
        try:
            if isinstance(job.rows, pd.DataFrame):
                good, rejects = job.rows, pd.DataFrame({REASON: []})
            else:
                frame = pd.DataFrame.from_records(job.rows, columns=list(job.scorer.spec.features))
                good, rejects = job.scorer.check_rows(frame)
            scored = job.scorer.predict(good) if len(good) else np.empty(0)  # the probability is all the log needs
        except Exception as exc:
            elapsed = (time.perf_counter() - started) * 1000
            self.failed(job.scorer, job.role, len(job.rows), exc)
            error = _error_text(exc)
            return [_record(origin, job.scorer, job.role, False, None, elapsed, error) for origin in job.origins]
        elapsed = (time.perf_counter() - started) * 1000
        probability = dict(zip(good.index.tolist(), scored.tolist(), strict=True))
        reasons = dict(zip(rejects.index.tolist(), rejects[REASON].tolist(), strict=True))
        if reasons:
            self.failed(job.scorer, job.role, len(reasons), ValueError(next(iter(reasons.values()))))
        self.stats.shadow_rows += len(probability)
        return [
            _record(origin, job.scorer, job.role, False, probability.get(i), elapsed, _rejected(reasons.get(i)))
            for i, origin in enumerate(job.origins)
        ]

    def failed(self, scorer: Scorer, role: str, rows: int, exc: Exception) -> None:
        """Count a failing call; warn on the first and then once per WARN_EVERY."""
        if role == CHALLENGER:
            self.stats.challenger_errors += rows
        else:
            self.stats.champion_shadow_errors += rows
        if self.failures[role] % WARN_EVERY == 0:
            log.warning(
                "%s v%s failed to score %d row(s) (%s; failing calls so far: %d)",
                role,
                scorer.model_version,
                rows,
                _error_text(exc),
                self.failures[role] + 1,
            )
        self.failures[role] += 1


def _merged(jobs: list[ShadowJob]) -> ShadowJob:
    """Jobs of one model as one (rows renumbered in order, like their origins)."""
    first = jobs[0]
    if len(jobs) == 1 and not first.checked:
        return first
    origins = [origin for job in jobs for origin in job.origins]
    if first.checked:
        rows: pd.DataFrame | list[dict[str, Any]] = pd.concat([job.rows for job in jobs], ignore_index=True)
    else:
        rows = [row for job in jobs for row in job.rows]
    return ShadowJob(first.scorer, first.role, rows, origins)


def _error_text(exc: Exception) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"[:300]


def _rejected(reason: str | None) -> str | None:
    return None if reason is None else f"rejected: {reason}"[:300]


def _record(
    origin: _Origin,
    scorer: Scorer,
    role: str,
    answered: bool,
    probability: float | None,
    latency_ms: float,
    error: str | None = None,
) -> Record:
    label = None if probability is None else int(probability >= scorer.spec.threshold)
    return Record(
        request_id=origin.request_id,
        row=origin.row,
        at=origin.arrived,
        model_version=scorer.model_version,
        role=role,
        answered=answered,
        entity_key=origin.key,
        probability=probability,
        label=label,
        latency_ms=latency_ms,
        error=error,
    )


@dataclass
class _Scored:
    """The answers of one model for some rows of a batch (positions in the batch's frame)."""

    scorer: Scorer
    role: str
    frame: pd.DataFrame  # probability, label, reason columns; index = positions
    latency_ms: float


class MicroBatcher:
    """Collects requests for up to ``max_wait_ms`` or ``max_batch_size`` rows, then scores them in one call."""

    def __init__(
        self,
        app_state: Any,
        max_batch_size: int,
        max_wait_ms: float,
        cache: PredictionCache | None,
        prediction_log: PredictionLog,
    ) -> None:
        self.state, self.max_rows, self.max_wait = app_state, max_batch_size, max_wait_ms / 1000
        self.cache, self.stats, self.last_batch_requests = cache, BatchStats(), 0
        self.log, self.release_stats = prediction_log, ReleaseStats()
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        # Batches are scored one at a time, always on this one thread, whose native pools are single-threaded.
        self.scoring = ThreadPoolExecutor(1, thread_name_prefix="score", initializer=one_native_thread)
        self.shadow = ShadowScorer(prediction_log, self.release_stats, max_batch_size)

    async def submit(self, rows: list[dict[str, Any]], reasons: bool, request_id: str, keys: list[str]) -> Answer:
        """The request's predictions, scored in a batch with whatever else is queued; RowsRejected for bad rows."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(rows, reasons, future, request_id, time.time(), keys))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            # Wait for company only under load (the last batch was shared): a lone request is scored at once.
            wait = self.max_wait if self.last_batch_requests > 1 else 0.0
            size, deadline = len(batch[0].rows), loop.time() + wait
            while size < self.max_rows:
                try:
                    item = (
                        self.queue.get_nowait()
                        if loop.time() >= deadline
                        else await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                batch.append(item)
                size += len(item.rows)
            self.last_batch_requests = len(batch)
            served: Served = self.state.served
            live: Live | None = self.state.release
            records: list[Record] = []
            jobs: list[ShadowJob] = []
            try:
                results = await loop.run_in_executor(self.scoring, self._score, served, live, batch, records, jobs)
            except Exception as exc:  # one failing batch answers its requests with the error, the loop goes on
                log.exception("batch of %d requests failed", len(batch))
                results = [exc] * len(batch)
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    if isinstance(result, Exception):
                        item.future.set_exception(result)
                    else:
                        item.future.set_result(result)
            self.log.record(records)  # after the answers: the log never delays one
            for job in jobs:
                self.shadow.submit(job)

    def _score(
        self,
        served: Served,
        live: Live | None,
        batch: list[_Pending],
        records: list[Record],
        jobs: list[ShadowJob],
    ) -> list[Answer | Exception]:
        """Score every request of the batch together (one frame, one predict call per model and reasons setting) and
        split the answers back by row offsets. The champion's row rules decide which requests are rejected; during a
        canary, the routed rows are answered by the challenger (by the champion when it fails). Fills ``records``
        with the answers' log records and ``jobs`` with the rows the other model scores off the path."""
        results: list[Answer | Exception] = [RuntimeError("not scored")] * len(batch)
        canary = live is not None and live.state.mode == "canary"
        for reasons in (False, True):
            members = [i for i, item in enumerate(batch) if item.reasons == reasons]
            if not members:
                continue
            scorer = served.explainer if reasons else served.scorer
            records_in = [row for i in members for row in batch[i].rows]
            counts = np.array([len(batch[i].rows) for i in members])
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            owner = np.repeat(np.arange(len(members)), counts)  # which member each row belongs to
            origins = [
                _Origin(batch[i].request_id, row, batch[i].arrived, key)
                for i in members
                for row, key in enumerate(batch[i].keys)
            ]
            frame = pd.DataFrame.from_records(records_in, columns=list(scorer.spec.features))
            good, rejects = scorer.check_rows(frame)
            bad = set(owner[rejects.index].tolist())
            keep = ~np.isin(owner, list(bad))
            kept = good[keep[good.index]]
            parts, failed = self._answer(scorer, kept, live, reasons, records_in, origins, records)
            if live is not None:
                jobs += _shadow_jobs(served, live, parts, failed, kept, records_in, origins)
            answers = pd.concat([part.frame for part in parts]).sort_index()
            version = {pos: part.scorer.model_version for part in parts for pos in part.frame.index.tolist()}
            probability = answers[PROBABILITY].tolist()
            label = answers[LABEL].tolist()
            codes = [answers[f"{REASON}_{k + 1}"].tolist() for k in range(scorer.reasons)] if reasons else []
            positions = answers.index.tolist()
            cursor = 0
            for slot, i in enumerate(members):
                if slot in bad:
                    mine = rejects[owner[rejects.index] == slot]
                    results[i] = RowsRejected(
                        [
                            {"loc": ["rows", int(row - starts[slot])], "msg": reason}
                            for row, reason in mine[REASON].items()
                        ]
                    )
                    continue
                predictions = []
                for row in range(cursor, cursor + counts[slot]):
                    answer = {"probability": probability[row], "label": label[row]}
                    if reasons:
                        answer["reasons"] = [column[row] for column in codes if isinstance(column[row], str)]
                    if canary:  # which model answered (in shadow mode, always the champion)
                        answer["model_version"] = version[positions[row]]
                    predictions.append(answer)
                cursor += counts[slot]
                results[i] = Answer(served.scorer.model_version, predictions)
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.rows += sum(len(item.rows) for item in batch)
        self.stats.requests_per_batch[len(batch)] += 1
        return results

    def _answer(
        self,
        scorer: Scorer,
        kept: pd.DataFrame,
        live: Live | None,
        reasons: bool,
        rows: list[dict[str, Any]],
        origins: list[_Origin],
        records: list[Record],
    ) -> tuple[list[_Scored], set[int]]:
        """Score the accepted rows with the model that answers each (the champion, or the canary for its share) and
        add their log records. A canary row the challenger cannot score is answered by the champion; those rows'
        positions come back too."""
        routed = np.zeros(len(kept), dtype=bool)
        if live is not None and live.state.mode == "canary":
            state = live.state
            routed = np.array([to_challenger(origins[pos].key, state.share, state.salt) for pos in kept.index], bool)
        parts: list[_Scored] = []
        fallback = kept.iloc[:0]
        failed: dict[int, str] = {}
        if routed.any():
            challenger = live.challenger.explainer if reasons else live.challenger.scorer
            mine = kept.index[routed]
            started = time.perf_counter()
            try:
                frame = pd.DataFrame.from_records([rows[pos] for pos in mine], columns=list(challenger.spec.features))
                frame.index = mine
                good, rejects = challenger.check_rows(frame)
                scored, hits = challenger.score(good, self.cache)
                self.stats.cache_hits += hits
                failed = {pos: _rejected(reason) for pos, reason in rejects[REASON].items()}
            except Exception as exc:
                scored, failed = kept.iloc[:0], dict.fromkeys(mine.tolist(), _error_text(exc))
            elapsed = (time.perf_counter() - started) * 1000
            if len(scored):
                parts.append(_Scored(challenger, CHALLENGER, scored, elapsed))
                self.release_stats.canary_rows += len(scored)
            if failed:
                self.shadow.failed(challenger, CHALLENGER, len(failed), RuntimeError(next(iter(failed.values()))))
                records += [
                    _record(origins[pos], challenger, CHALLENGER, False, None, elapsed, error)
                    for pos, error in failed.items()
                ]
                fallback = kept.loc[list(failed)]
        own = pd.concat([kept[~routed], fallback]) if len(fallback) else kept[~routed]
        if len(own) or not parts:
            started = time.perf_counter()
            scored, hits = scorer.score(own, self.cache)
            self.stats.cache_hits += hits
            parts.append(_Scored(scorer, CHAMPION, scored, (time.perf_counter() - started) * 1000))
        for part in parts:
            records += [
                _record(origins[pos], part.scorer, part.role, True, probability, part.latency_ms)
                for pos, probability in zip(part.frame.index.tolist(), part.frame[PROBABILITY].tolist(), strict=True)
            ]
        return parts, set(failed)


def _shadow_jobs(
    served: Served,
    live: Live,
    parts: list[_Scored],
    tried: set[int],
    typed: pd.DataFrame,
    rows: list[dict[str, Any]],
    origins: list[_Origin],
) -> list[ShadowJob]:
    """During a release, every answered row goes to the model that did not answer it, except the canary rows the
    challenger already failed on (``tried``). Rows go as the champion's check typed them when the other model has
    the same features and types (the same row rules: they come from the same settings), else raw to be checked."""
    jobs = []
    for part in parts:
        if part.role == CHAMPION:
            other, role = live.challenger.scorer, CHALLENGER
            positions = [pos for pos in part.frame.index.tolist() if pos not in tried]
        else:
            other, role = served.scorer, CHAMPION
            positions = part.frame.index.tolist()
        if not positions:
            continue
        same = other.spec.features == served.scorer.spec.features and other.spec.dtypes == served.scorer.spec.dtypes
        if same:
            given: pd.DataFrame | list[dict[str, Any]] = typed if len(positions) == len(typed) else typed.loc[positions]
        else:
            given = [rows[pos] for pos in positions]
        jobs.append(ShadowJob(other, role, given, [origins[pos] for pos in positions]))
    return jobs


def one_native_thread() -> None:
    """Run on the scoring thread: OpenMP (gradient boosting), BLAS and torch on one thread each. A team of threads per
    call is useless for a micro-batch and harmful on a busy machine, where the team waits at its barriers for cores:
    single-row requests then stalled for 1.7-2.9 s now and then (bench/serving.py, Python runtime)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # OpenMP for this thread, BLAS for the process
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def freeze_heap() -> None:
    """Take what is alive now (the imports, the loaded model) out of the garbage collector's sight: a full collection
    then walks only what requests allocate instead of a million long-lived objects (MLflow, pandas, the model), which
    cost about 140 ms every few seconds under load and held every request in flight that long. On a reload the old
    model is released first (one full collection, once)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def load_served(config: Config, alias: str, version: str | None = None) -> Served:
    """The version ``alias`` points at (or ``version``, held under ``alias``), loaded and verified."""
    loaded, device = load_model(
        config, alias=None if version else alias, version=version, runtime=config.params.serve.runtime
    )
    scorer = make_scorer(loaded, config, 0)
    return Served(
        scorer=scorer,
        explainer=make_scorer(loaded, config, max(config.params.score.reasons, 1)),
        alias=alias,
        device=device,
        meta=loaded.meta,
        lineage={key: loaded.tags[key] for key in PUBLIC_LINEAGE if key in loaded.tags},
        schema=request_model(scorer, config.params.serve.max_rows_per_request, key_column(config)),
        runtime=loaded.runtime,
        warning=gates_warning(loaded),
    )


def follow_release(config: Config, live: Live | None, state: ReleaseState | None) -> Live | None:
    """The release to serve now: none when no shadow or canary release runs; the loaded challenger kept while its
    version is the same (mode or share may change), else the new challenger loaded."""
    if state is None or not state.live:
        if live is not None:
            log.info("release of v%s ended: serving the champion alone", live.state.challenger)
        return None
    if live is not None and live.challenger.scorer.model_version == state.challenger:
        return live if live.state == state else replace(live, state=state)
    challenger = load_served(config, config.params.release.challenger_alias, version=state.challenger)
    log.info("release: v%s is the %s challenger (share %.3g)", state.challenger, state.mode, state.share)
    return Live(state, challenger)


def _current_release(config: Config, alias: str) -> ReleaseState | None:
    """The registry's release state, for a server of the champion alias only (another alias has no release)."""
    registry = config.params.registry
    if alias != registry.champion_alias:
        return None
    return release_state(registry.model_name, registry.champion_alias, config.params.release.challenger_alias)


async def _update_release(app: FastAPI, config: Config) -> None:
    """Load, keep or drop the challenger; a challenger that cannot be loaded leaves the champion serving alone,
    said once per distinct problem in the log and in /metrics."""
    try:
        state = await asyncio.to_thread(_current_release, config, app.state.served.alias)
        live = await asyncio.to_thread(follow_release, config, app.state.release, state)
        if live is not None and (app.state.release is None or live.challenger is not app.state.release.challenger):
            await asyncio.to_thread(freeze_heap)
        app.state.release, app.state.release_problem = live, None
    except Exception as exc:  # the release is optional: the champion keeps answering
        problem = f"challenger not loaded ({_error_text(exc)})"
        if problem != app.state.release_problem:
            log.warning("%s; serving the champion alone", problem)
        app.state.release, app.state.release_problem = None, problem


async def _follow_alias(app: FastAPI, config: Config) -> None:
    """Poll the registry; when the alias points at another version, load and verify it, then swap; then follow the
    release. A failed check keeps the running model, says so in one log line and in /health; a replaced SQLite store
    is reconnected."""
    name = config.params.registry.model_name
    watch = StoreWatch(config)
    while True:
        await asyncio.sleep(config.params.serve.reload_seconds)
        served: Served = app.state.served
        try:
            watch.check()
            current = str((await asyncio.to_thread(resolve_version, name, alias=served.alias)).version)
            if current != served.scorer.model_version:
                app.state.served = await asyncio.to_thread(load_served, config, served.alias)
                await asyncio.to_thread(freeze_heap)
                app.state.batcher.stats.reloads += 1
                log.info("%s moved: now serving %s v%s", served.alias, name, current)
            app.state.registry_problem = None
        except Exception as exc:  # a registry hiccup or a bad new version keeps the running model
            if app.state.registry_problem is None:
                app.state.registry_problem = f"registry check failing since {time.strftime('%H:%M:%S')}"
            log.warning(
                "reload check failed (%s: %s); still serving v%s",
                type(exc).__name__,
                str(exc).splitlines()[0][:300] if str(exc) else "",
                served.scorer.model_version,
            )
            continue
        await _update_release(app, config)


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes`` (by Content-Length, or counted while streaming)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        detail = f"request body is larger than serve.max_body_bytes = {self.max_bytes} bytes"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    pass


class ClientRateLimiter:
    """A token bucket per client: ``per_minute`` requests, refilled continuously, so a model-extraction sweep of
    thousands of queries is slowed to the limit and shows up as 429s in the logs."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def allow(self, client: str) -> float:
        """0.0 when the request may go ahead, else the seconds until the client's next token."""
        now = self.clock()
        tokens, at = self.buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self.buckets[client] = (tokens - 1.0, now)
            return 0.0
        self.buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate


class UnknownClient(Exception):
    """A request without a listed API key while keys are required."""


def client_key(request: Request, serve: ServeParams) -> str:
    """Who is calling, for rate limits and logs. With ``serve.api_keys_sha256`` set: the short hash of a listed key
    (UnknownClient for none or another; the key itself is never kept or logged). Without: the peer address, or the
    client X-Forwarded-For names when the peer is one of ``serve.trusted_proxies`` (anyone else could forge it)."""
    if serve.api_keys_sha256:
        key = request.headers.get("x-api-key", "")
        digest = hashlib.sha256(key.encode()).hexdigest()
        if not key or not any(hmac.compare_digest(digest, known) for known in serve.api_keys_sha256):
            raise UnknownClient
        return f"key:{digest[:12]}"
    address = request.client.host if request.client else "unknown"
    if _trusted(address, serve.trusted_proxies):
        forwarded = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()]
        for hop in reversed(forwarded):  # the nearest hop a trusted proxy did not add itself
            address = hop
            if not _trusted(hop, serve.trusted_proxies):
                break
    return f"ip:{address}"


def _trusted(address: str, proxies: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def exposed(serve: ServeParams) -> bool:
    """Whether others can reach the API: it listens beyond loopback, or sits behind a proxy."""
    try:
        loopback = ipaddress.ip_address(serve.host).is_loopback
    except ValueError:
        loopback = serve.host == "localhost"
    return not loopback or bool(serve.trusted_proxies)


PUBLIC_LINEAGE = ("model.family", "model.threshold", "data.sha256", "params.sha256", "git.commit")


def create_app(config: Config, alias: str | None = None) -> FastAPI:
    """The API; the model (and a running release's challenger) is loaded (and verified) at startup, before the first
    request is accepted. Reachable by others (``exposed``), it serves no /docs or /openapi.json."""
    serve = config.params.serve
    alias = alias or config.params.registry.champion_alias
    keyed_by = key_column(config)
    feedback_schema = feedback_model(serve.max_rows_per_request)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.served = await asyncio.to_thread(load_served, config, alias)
        app.state.release, app.state.release_problem, app.state.registry_problem = None, None, None
        await _update_release(app, config)
        freeze_heap()
        app.state.prediction_log = PredictionLog(log_url(config)).start()
        cache = PredictionCache(config.path("prediction_cache")) if serve.cache else None
        app.state.batcher = MicroBatcher(
            app.state, serve.max_batch_size, serve.max_wait_ms, cache, app.state.prediction_log
        )
        tasks = [asyncio.create_task(app.state.batcher.run()), asyncio.create_task(_follow_alias(app, config))]
        yield
        for task in tasks:
            task.cancel()
        app.state.batcher.scoring.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(app.state.batcher.shadow.close)
        await asyncio.to_thread(app.state.prediction_log.close)  # what was queued is written

    docs = {} if not exposed(serve) else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="Optiflow scoring API", lifespan=lifespan, **docs)
    app.add_middleware(BodyLimit, max_bytes=serve.max_body_bytes)
    limiter = ClientRateLimiter(serve.rate_limit_per_minute) if serve.rate_limit_per_minute else None

    @app.get("/health")
    async def health() -> dict[str, Any]:
        served: Served = app.state.served
        problems = [problem for problem in (served.warning, app.state.registry_problem) if problem]
        return {
            "status": "degraded" if problems else "ok",
            "model_version": served.scorer.model_version,
            **({"problems": problems} if problems else {}),
        }

    @app.get("/metadata", response_model=None)
    async def metadata(request: Request) -> dict[str, Any] | JSONResponse:
        """What a client needs to call the model; lineage as hashes only (no paths, users or gate reasons)."""
        if not _known(request, serve):
            return _unauthorised()
        served: Served = app.state.served
        return {
            "model_name": served.scorer.model_name,
            "model_version": served.scorer.model_version,
            "alias": served.alias,
            "family": served.meta.get("family"),
            "threshold": served.scorer.spec.threshold,
            "features": list(served.scorer.spec.features),
            "device": served.device,
            "runtime": served.runtime,
            "promoted": served.warning is None,
            "lineage": served.lineage,
        }

    @app.get("/metrics", response_model=None)
    async def metrics(request: Request) -> dict[str, Any] | JSONResponse:
        if not _known(request, serve):
            return _unauthorised()
        live: Live | None = app.state.release
        prediction_log: PredictionLog = app.state.prediction_log
        release = {
            "mode": live.state.mode if live else None,
            "challenger": live.state.challenger if live else None,
            "share": live.state.share if live else None,
            **app.state.batcher.release_stats.to_dict(),
            **({"problem": app.state.release_problem} if app.state.release_problem else {}),
        }
        return {
            **app.state.batcher.stats.to_dict(),
            "model_version": app.state.served.scorer.model_version,
            "release": release,
            "prediction_log": {"written": prediction_log.written, "dropped": prediction_log.dropped},
        }

    async def admitted_body(request: Request) -> bytes | Response:
        """The body of a POST from a known client within its rate limit, sent as JSON in time; else the answer."""
        try:
            client = client_key(request, serve)
        except UnknownClient:
            return _unauthorised()
        if limiter is not None:
            wait = limiter.allow(client)
            if wait:
                log.warning("rate limit: %s over %d requests/minute", client, serve.rate_limit_per_minute)
                return JSONResponse(
                    {"detail": f"rate limit of {serve.rate_limit_per_minute} requests per minute exceeded"},
                    status_code=429,
                    headers={"Retry-After": str(max(1, round(wait)))},
                )
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return JSONResponse({"detail": "Content-Type must be application/json"}, status_code=415)
        try:
            raw = await asyncio.wait_for(request.body(), serve.timeout_seconds)
        except TimeoutError:
            log.warning("408: %s did not send its body within serve.timeout_seconds", client)
            return JSONResponse({"detail": f"body not received within {serve.timeout_seconds} s"}, status_code=408)
        except ClientDisconnect:
            log.info("%s disconnected before sending its body", client)
            return Response(status_code=400)
        return raw

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        """Top-level ``model_version`` is the champion's; during a release each prediction also names the version
        that answered it (the canary's for its share of entities)."""
        served: Served = app.state.served
        raw = await admitted_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            body = served.schema.model_validate_json(raw)
        except ValidationError as exc:
            return _invalid(exc)
        request_id = uuid.uuid4().hex
        rows = [row.model_dump() for row in body.rows]
        features = served.scorer.spec.features
        keys = [entity_key(row, keyed_by, features) for row in rows]
        try:
            answer = await app.state.batcher.submit(rows, body.reasons, request_id, keys)
        except RowsRejected as exc:
            return JSONResponse({"detail": exc.problems}, status_code=422, headers={"X-Request-Id": request_id})
        predictions = answer.predictions
        if serve.probability_decimals is not None:
            predictions = [
                {**item, "probability": round(item["probability"], serve.probability_decimals)} for item in predictions
            ]
        return JSONResponse(
            {"request_id": request_id, "model_version": answer.model_version, "predictions": predictions},
            headers={"X-Request-Id": request_id},
        )

    @app.post("/feedback")
    async def feedback(request: Request) -> Response:
        """Outcomes for entity keys, joined to the logged predictions of those entities (a key sent again keeps its
        newest label)."""
        raw = await admitted_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            body = feedback_schema.model_validate_json(raw)
        except ValidationError as exc:
            return _invalid(exc)
        pairs = [(item.key, item.label) for item in body.labels]
        stored = await asyncio.to_thread(app.state.prediction_log.add_labels, pairs)
        return JSONResponse({"received": len(pairs), "stored": stored})

    return app


def _known(request: Request, serve: ServeParams) -> bool:
    try:
        client_key(request, serve)
    except UnknownClient:
        return False
    return True


def _unauthorised() -> JSONResponse:
    """401 for a request without a listed key: logged without the key, and no rate-limit bucket is made for it."""
    log.warning("401: a request without a listed X-API-Key")
    return JSONResponse({"detail": "a listed X-API-Key is required"}, status_code=401)


def _invalid(exc: ValidationError) -> JSONResponse:
    """400 for a body that is not JSON, 422 naming every invalid field (e.g. rows[2].tenure) otherwise."""
    errors = exc.errors(include_url=False, include_input=False)
    if any(error["type"] == "json_invalid" for error in errors):
        message = "; ".join(str(error.get("ctx", {}).get("error", error["msg"])) for error in errors)
        return JSONResponse({"detail": f"malformed JSON: {message}"}, status_code=400)
    problems = [{"field": _field(error["loc"]), "msg": error["msg"], "type": error["type"]} for error in errors]
    return JSONResponse({"detail": problems}, status_code=422)


def _field(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def server_config(config: Config, alias: str | None = None) -> Any:
    """uvicorn's settings for the API: its own X-Forwarded-For handling off (``client_key`` believes the header from
    ``serve.trusted_proxies`` only), a deadline for each request's headers, idle keep-alive and connection limits."""
    import uvicorn

    serve = config.params.serve
    return uvicorn.Config(
        create_app(config, alias),
        host=serve.host,
        port=serve.port,
        log_level="info",
        access_log=False,  # a line per request costs the event loop more than scoring does (/metrics counts)
        proxy_headers=False,
        http=with_request_deadline(serve.timeout_seconds),
        timeout_keep_alive=serve.keep_alive_seconds,
        limit_concurrency=serve.max_connections,
    )


def with_request_deadline(seconds: float) -> type:
    """uvicorn's HTTP protocol, closing a connection whose request headers have not all arrived ``seconds`` after it
    opened or after its last response: uvicorn times out idle keep-alive connections only, so a client sending
    nothing, or a header byte at a time, would hold a connection and its slot forever."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools is optional for uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class DeadlineProtocol(Base):
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle:  # a request's headers are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _expire(self) -> None:
            if not self.transport.is_closing():
                log.info("closed a connection from %s: no complete request within %s s", self.client, seconds)
                self.transport.close()

    return DeadlineProtocol


def run_server(config: Config, alias: str | None = None) -> None:
    """Serve until stopped; a port already in use is a ConfigError before the model is loaded."""
    import socket

    import uvicorn

    serve = config.params.serve
    with socket.socket(socket.AF_INET6 if ":" in serve.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing socket is no conflict
        try:
            probe.bind((serve.host, serve.port))
        except OSError as exc:
            raise ConfigError(
                f"serve.port {serve.port} on {serve.host}: cannot listen there ({exc.strerror})"
            ) from None
    uvicorn.Server(server_config(config, alias)).run()
