"""Batch scoring of a registered model: read a CSV or Parquet file in chunks, check each row against the training
schema and the validation rules, score chunks concurrently, and write probability, label and reason codes.

Reading, scoring and writing overlap: a reader thread parses the next chunk (pyarrow's CSV reader) while ``workers``
threads score and a writer thread appends finished chunks in file order (pyarrow's CSV and Parquet writers), each
stage handing over through a bounded queue. Memory stays flat as the input grows: at most ``workers + 4`` chunks are
in flight, and the output and rejects are streamed to temporary files that replace the targets in one rename at the
end. Bad rows never stop the run: each
goes to the rejects file with every reason it failed. Reason codes are feature occlusion: a feature's contribution
is how far the probability drops when that one feature is set to its reference value (training median or most
frequent value). It needs no model internals, so it works for every family, and costs one predict call per feature.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from optiflow.config import Config, DataParams, Runtime, ScoreParams, ValidateParams
from optiflow.data.ingest import check_header
from optiflow.errors import DataError
from optiflow.io import atomic_path
from optiflow.parallel import FanOut
from optiflow.release.serving_spec import (
    LABEL,
    PROBABILITY,
    REASON,
    RowContract,
    ServingSpec,
    check_columns,
    check_rows,
)
from optiflow.serving.cache import PredictionCache, row_keys

if TYPE_CHECKING:
    from optiflow.release.registry import LoadedModel

log = logging.getLogger(__name__)

ROW = "row"  # 0-based position of the row in the input file


@dataclass(frozen=True)
class Scorer:
    """A loaded model with what scoring needs: the serving spec, the label values and the rules rows must pass."""

    model: Any  # predict_proba on raw feature frames
    spec: ServingSpec
    data: DataParams
    rules: ValidateParams
    model_name: str
    model_version: str
    reasons: int = 0  # top reason codes per row

    @property
    def cache_space(self) -> str:
        """The cache partition of these predictions: a new version (or other options) never reads old entries."""
        return f"{self.model_name}/{self.model_version}/reasons={self.reasons}"

    @cached_property
    def contract(self) -> RowContract:
        """The row contract of these settings (the registered model ships the one of its registration)."""
        return RowContract.from_settings(self.data, self.rules, self.spec.features)

    def check_columns(self, columns: Iterable[str], origin: str = "input") -> None:
        """Every feature the model needs is there (extra columns are ignored)."""
        check_columns(self.spec, columns, origin)

    def check_rows(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(rows typed as at training, rejects with a ``reason`` naming every failure): ``check_rows``, the one
        implementation the registered model's own ``predict`` runs too."""
        return check_rows(frame, self.spec, self.contract)

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(rows[list(self.spec.features)])[:, 1]

    def reason_codes(self, rows: pd.DataFrame, probability: np.ndarray) -> list[list[str | None]]:
        """The ``reasons`` features whose reference value lowers the probability most, per row (None when fewer
        features raise it)."""
        features = list(self.spec.features)
        drops = np.empty((len(rows), len(features)))
        for j, column in enumerate(features):
            occluded = rows[features].copy()
            occluded[column] = pd.Series([self.spec.reference[column]] * len(rows), index=rows.index).astype(
                rows[column].dtype
            )
            drops[:, j] = probability - self.model.predict_proba(occluded)[:, 1]
        order = np.argsort(-drops, axis=1, kind="stable")[:, : self.reasons]
        names = np.asarray(features, dtype=object)[order]
        names[np.take_along_axis(drops, order, axis=1) <= 0] = None
        return [list(row) for row in names]

    def score(self, rows: pd.DataFrame, cache: PredictionCache | None = None) -> tuple[pd.DataFrame, int]:
        """Probability, label and reasons of typed rows (index kept); uses and fills ``cache``; returns hits."""
        result = pd.DataFrame(index=rows.index)
        result[PROBABILITY] = np.nan
        reason_columns = [f"{REASON}_{i + 1}" for i in range(self.reasons)]
        for name in reason_columns:
            result[name] = pd.Series(pd.NA, index=rows.index, dtype="string")
        todo = np.ones(len(rows), dtype=bool)
        keys = None
        if cache is not None and len(rows):
            keys = row_keys(rows[list(self.spec.features)])
            positions, probabilities, cached_reasons = cache.get(self.cache_space, keys)
            result.iloc[positions, 0] = probabilities
            for i in range(self.reasons):
                result.iloc[positions, i + 1] = [codes[i] for codes in cached_reasons]
            todo[positions] = False
        misses = rows[todo]
        if len(misses):
            probability = self.predict(misses)
            result.iloc[np.flatnonzero(todo), 0] = probability
            codes = self.reason_codes(misses, probability) if self.reasons else [[] for _ in range(len(misses))]
            for i in range(self.reasons):
                result.iloc[np.flatnonzero(todo), i + 1] = [row[i] for row in codes]
            if cache is not None and keys is not None:
                cache.put(self.cache_space, keys[todo], probability, codes)
        result[PROBABILITY] = result[PROBABILITY].astype(float)
        result.insert(
            1, LABEL, pd.Series(self.labels(result[PROBABILITY].to_numpy()), index=rows.index, dtype="string")
        )
        return result, len(rows) - len(misses)

    def labels(self, probability: np.ndarray) -> np.ndarray:
        positive, negative = self.data.positive_label, self.data.negative_label
        return np.where(probability >= self.spec.threshold, positive, negative).astype(object)


@dataclass(frozen=True)
class ScoreSummary:
    model_name: str
    model_version: str
    rows_read: int
    rows_scored: int
    rows_rejected: int
    cache_hits: int
    cache_misses: int
    chunks: int
    seconds: float
    output: str
    rejects: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def rejects_path(output: Path) -> Path:
    """Where the rejected rows of ``output`` go: a CSV next to it named from the whole output name
    (scores.jan.csv -> scores.jan.rejects.csv), so two outputs never share one rejects file."""
    output = Path(output)
    stem = output.name[: -len(output.suffix)] if output.suffix.lower() in TABLE_SUFFIXES else output.name
    return output.with_name(f"{stem}.rejects.csv")


PROJECT_FILES = ("params.yaml", "runtime.yaml", "dvc.yaml", "dvc.lock", ".git", ".dvc", ".prefect", ".optiflow")


def unscored_batches(config: Config) -> list[tuple[Path, Path]]:
    """The batch files of paths.batches (in name order) without scores in paths.scored yet, each with the file its
    scores go to (`<batch id>.csv`). No batches folder yet means nothing has arrived: no batch, no error."""
    from optiflow.monitoring.batches import BATCH_SUFFIXES, batch_id

    source, scored = config.path("batches"), config.path("scored")
    if not source.is_dir():
        return []
    files = sorted(path for path in source.iterdir() if path.is_file() and path.name.endswith(BATCH_SUFFIXES))
    targets = [(path, scored / f"{batch_id(path)}.csv") for path in files]
    return [(path, target) for path, target in targets if not target.exists()]


def check_targets(config: Config, source: Path, output: Path, force: bool = False) -> None:
    """Refuse, before anything is read or loaded, an output or rejects file that would replace the input, a folder,
    or a file the project keeps (git- or DVC-tracked, a pipeline path, the tracking store, settings), unless
    ``force``. Writes are atomic either way: a refused or failed run leaves every file as it was."""
    output = Path(output)
    for target in (output, rejects_path(output)):
        if target.is_dir():
            raise DataError(f"{target}: is a folder; --output must name a file")
        blocking = next((parent for parent in target.parents if parent.exists() and not parent.is_dir()), None)
        if blocking is not None:
            raise DataError(f"{target}: {blocking} is a file, not a folder; --output cannot go inside it")
        if force:
            continue
        reason = "the input file" if target.resolve() == Path(source).resolve() else _kept_by_project(config, target)
        if reason:
            what = "--output" if target == output else f"the rejects file of --output {output.name}"
            raise DataError(
                f"{target}: {what} would replace {reason}; choose another --output, or pass --force to replace it"
            )


def _kept_by_project(config: Config, target: Path) -> str | None:
    """Why the project keeps ``target`` (None when it does not): a file scoring must not overwrite unasked."""
    import subprocess

    from optiflow.io import sqlite_file

    root, path = config.root.resolve(), target.resolve()
    if not path.is_relative_to(root):
        return None
    relative = path.relative_to(root)
    declared = {f"paths.{key}": config.path(key) for key in type(config.params.paths).model_fields}
    declared |= {
        "data.source": config.source,
        "tracking.artifact_location": root / config.params.tracking.artifact_location,
    }
    store = sqlite_file(config.params.tracking.uri)
    if store is not None:
        declared["tracking.uri"] = root / store
    for name, kept in declared.items():
        if path == kept.resolve() or path.is_relative_to(kept.resolve()):
            return f"a pipeline file ({name} = {kept.relative_to(root) if kept.is_relative_to(root) else kept})"
    if relative.parts[0] in PROJECT_FILES:
        return f"a project file ({relative.parts[0]})"
    if any((root / part).with_name(part.name + ".dvc").is_file() for part in (relative, *relative.parents[:-1])):
        return "a DVC-tracked file"
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "--", str(relative)], cwd=root, capture_output=True, check=False
    )
    return "a file tracked by git" if tracked.returncode == 0 else None


def read_chunks(path: Path, chunk_rows: int, numeric: tuple[str, ...] = ()) -> Iterator[pd.DataFrame]:
    """The file's rows, ``chunk_rows`` at a time (the last chunk may be shorter), index = row number in the file.

    CSV columns are read as text, so one bad value rejects a row (in ``Scorer.check_rows``) instead of breaking type
    inference for the whole file. The ``numeric`` columns of a chunk are cast to float in Arrow when every value
    parses, which is several times faster than parsing in pandas; a chunk with a bad value keeps its text.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    try:
        batches = _parquet_batches(path, chunk_rows) if _is_parquet(path) else _csv_batches(path)
        offset, pending, pending_rows = 0, [], 0
        for batch in batches:
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= chunk_rows:
                table = pa.Table.from_batches(pending)
                yield _frame(table.slice(0, chunk_rows), offset, numeric)
                offset += chunk_rows
                rest = table.slice(chunk_rows)
                pending, pending_rows = rest.to_batches(), rest.num_rows
        if pending_rows:
            yield _frame(pa.Table.from_batches(pending), offset, numeric)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from None


def _frame(table: pa.Table, offset: int, numeric: tuple[str, ...]) -> pd.DataFrame:
    import pyarrow.compute as pc

    for column in numeric:
        index = table.schema.get_field_index(column)
        if index < 0 or not pa.types.is_string(table.schema.field(index).type):
            continue
        try:
            values = pc.cast(pc.utf8_trim_whitespace(table.column(index)), pa.float64())
        except pa.ArrowInvalid:
            continue
        table = table.set_column(index, column, values)
    frame = table.to_pandas()
    frame.index = pd.RangeIndex(offset, offset + len(frame), name=ROW)
    return frame


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in {".parquet", ".pq"}


def _parquet_batches(path: Path, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    check_header(parquet.schema_arrow.names, path)
    yield from parquet.iter_batches(batch_size=chunk_rows)


def _csv_batches(path: Path) -> Iterator[pa.RecordBatch]:
    from pyarrow import csv

    def stream() -> Any:
        return pa.input_stream(str(path), compression="detect")

    with stream() as source:
        names = csv.open_csv(source).schema.names
    check_header(names, path)  # a repeated name or another delimiter: one clear error before any row is scored
    options = csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True)
    with stream() as source:
        yield from csv.open_csv(source, convert_options=options)


def score_file(
    source: Path,
    output: Path,
    scorer: Scorer,
    params: ScoreParams,
    cache: PredictionCache | None = None,
    fan_out: FanOut | None = None,
) -> ScoreSummary:
    """Score ``source`` into ``output`` (Parquet for .parquet/.pq, else CSV) and its rejects file, atomically.

    Chunks are scored on ``params.workers`` threads, or, given a ``fan_out`` (Dask workers), as its pieces in
    windows of ``params.workers`` chunks; either way at most that many chunks are in flight, written in file order.
    """
    started = time.perf_counter()
    output = Path(output)
    counts = {"read": 0, "scored": 0, "rejected": 0, "hits": 0, "chunks": 0}
    with atomic_path(output) as out_tmp, atomic_path(rejects_path(output)) as rejects_tmp:
        writer = _Writer(out_tmp, parquet=_is_parquet(output))
        rejects = _Writer(rejects_tmp, parquet=False)

        def collect(result: ChunkResult) -> None:
            read, scored, rejected, hits = result
            writer.write(scored)
            rejects.write(rejected)
            counts["read"] += read
            counts["scored"] += len(scored)
            counts["rejected"] += len(rejected)
            counts["hits"] += hits
            counts["chunks"] += 1

        numeric = tuple(column for column in scorer.spec.features if scorer.spec.numeric(column))
        jobs = (
            ChunkJob(scorer, _with_columns_checked(scorer, chunk, source), cache)
            for chunk in read_chunks(source, params.chunk_rows, numeric)
        )
        if fan_out is None:
            _score_on_threads(jobs, params.workers, collect)
        else:
            while window := list(itertools.islice(jobs, params.workers)):
                for result in fan_out(score_chunk, window):
                    collect(result)
        writer.close(_empty_output(scorer))
        rejects.close(pd.DataFrame(columns=[ROW, REASON]))
    summary = ScoreSummary(
        model_name=scorer.model_name,
        model_version=scorer.model_version,
        rows_read=counts["read"],
        rows_scored=counts["scored"],
        rows_rejected=counts["rejected"],
        cache_hits=counts["hits"],
        cache_misses=counts["scored"] - counts["hits"],
        chunks=counts["chunks"],
        seconds=round(time.perf_counter() - started, 3),
        output=str(output),
        rejects=str(rejects_path(output)),
    )
    log.info(
        "scored %d of %d rows (%d rejected, cache %d hits / %d misses) in %.2f s -> %s",
        summary.rows_scored,
        summary.rows_read,
        summary.rows_rejected,
        summary.cache_hits,
        summary.cache_misses,
        summary.seconds,
        output,
    )
    return summary


def _with_columns_checked(scorer: Scorer, chunk: pd.DataFrame, source: Path) -> pd.DataFrame:
    """A missing column fails the run naming the file, before any chunk is scored."""
    scorer.check_columns(chunk.columns, origin=str(source))
    return chunk


@dataclass(frozen=True)
class ChunkJob:
    """One chunk to check and score, with what that needs (a Dask worker gets it pickled: the scorer's torch
    networks travel as state dict bytes, the cache as its file path)."""

    scorer: Scorer
    rows: pd.DataFrame
    cache: PredictionCache | None


ChunkResult = tuple[int, pd.DataFrame, pd.DataFrame, int]  # rows read, scored rows, rejects, cache hits


def score_chunk(job: ChunkJob) -> ChunkResult:
    scorer, chunk = job.scorer, job.rows
    good, rejected = scorer.check_rows(chunk)
    scored, hits = scorer.score(good, job.cache)
    ids = [column for column in scorer.data.id_columns if column in chunk.columns]
    scored = pd.concat([chunk.loc[good.index, ids], scored], axis=1).reset_index()
    return len(chunk), scored, rejected.reset_index(), hits


def _score_on_threads(jobs: Iterable[ChunkJob], workers: int, collect: Callable[[ChunkResult], None]) -> None:
    """Read, score and write at once: the next chunk is read on a reader thread while up to ``workers`` chunks score
    on a pool and a writer thread collects finished ones in file order; every hand-over is a bounded queue, so at
    most ``workers + 4`` chunks are in memory. The first error of any stage stops the run and is raised here."""
    with ThreadPoolExecutor(workers, thread_name_prefix="score") as pool, _Stage(collect, "write") as writer:
        in_flight: deque[Future[ChunkResult]] = deque()
        for job in _read_ahead(jobs):
            in_flight.append(pool.submit(score_chunk, job))
            while len(in_flight) > workers or (in_flight and in_flight[0].done()):
                writer.put(in_flight.popleft().result())
        while in_flight:
            writer.put(in_flight.popleft().result())


_DONE = object()


def _read_ahead(jobs: Iterable[ChunkJob]) -> Iterator[ChunkJob]:
    """``jobs`` produced on a reader thread one chunk ahead (parsing a chunk overlaps scoring the previous ones)."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def read() -> None:
        try:
            for job in jobs:
                while not stop.is_set():
                    try:
                        ready.put(job, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put(exc)

    reader = threading.Thread(target=read, name="read", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


class _Stage:
    """A consumer thread behind a bounded queue: ``put`` hands it an item (waiting while it is busy), leaving the
    block waits for it to finish and raises its error, if any."""

    def __init__(self, consume: Callable[[Any], None], name: str) -> None:
        self.consume, self.items, self.error = consume, queue.Queue(maxsize=1), None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while (item := self.items.get()) is not _DONE:
            if self.error is None:
                try:
                    self.consume(item)
                except BaseException as exc:  # kept, raised in the producer's thread
                    self.error = exc

    def put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self.items.put(item)

    def __enter__(self) -> _Stage:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.items.put(_DONE)
        self.thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error


def _empty_output(scorer: Scorer) -> pd.DataFrame:
    columns = [ROW, *scorer.data.id_columns, PROBABILITY, LABEL]
    return pd.DataFrame(columns=columns + [f"{REASON}_{i + 1}" for i in range(scorer.reasons)])


class _Writer:
    """Appends frames to one CSV or Parquet file through pyarrow (every chunk cast to the first one's schema);
    writes a header-only file when nothing came."""

    def __init__(self, path: Path, parquet: bool) -> None:
        self.path, self.parquet, self.writer, self.schema = path, parquet, None, None

    def write(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            self.schema = table.schema
            if self.parquet:
                import pyarrow.parquet as pq

                self.writer = pq.ParquetWriter(self.path, table.schema)
            else:
                from pyarrow import csv

                self.writer = csv.CSVWriter(self.path, table.schema)
        self.writer.write_table(table.cast(self.schema))

    def close(self, empty: pd.DataFrame) -> None:
        if self.writer is not None:
            self.writer.close()
        elif self.parquet:
            empty.to_parquet(self.path, index=False)
        else:
            empty.to_csv(self.path, index=False)


def place_on_device(model: Any, requested: str) -> str:
    """Move a model that can move (torch families offer ``to``) to the chosen device; sklearn pipelines always
    run on the CPU (and torch is not even imported for them)."""
    if not callable(getattr(model, "to", None)):
        return "cpu"
    from optiflow.modeling.mlp import resolve_device

    device = resolve_device(requested, "score.device", strict=False)
    model.to(device)
    return device


def load_model(
    config: Config, *, alias: str | None = None, version: str | None = None, runtime: Runtime | None = None
) -> tuple[LoadedModel, str]:
    """The verified registered model (default: the champion alias) on ``runtime`` (default: score.runtime), placed
    on its device (logged)."""
    from optiflow.release.registry import connect, gates_warning, load_registered

    params = config.params
    connect(config, create=False)
    if version is None and alias is None:
        alias = params.registry.champion_alias
    runtime = params.score.runtime if runtime is None else runtime
    loaded = load_registered(params.registry.model_name, alias=alias, version=version, runtime=runtime)
    warning = gates_warning(loaded)
    if warning:
        log.warning("SERVING A VERSION THAT FAILED ITS GATES: %s", warning)
    device = place_on_device(loaded.model, params.score.device)
    log.info(
        "scoring with %s v%s (%s) on %s, %s",
        loaded.name,
        loaded.version,
        loaded.meta.get("family", "?"),
        device,
        "ONNX Runtime" if loaded.runtime == "onnx" else "the Python model",
    )
    return loaded, device


def make_scorer(loaded: LoadedModel, config: Config, reasons: int) -> Scorer:
    params = config.params
    return Scorer(loaded.model, loaded.spec, params.data, params.validation, loaded.name, loaded.version, reasons)


def score_batch(
    config: Config,
    source: Path,
    output: Path,
    *,
    alias: str | None = None,
    version: str | None = None,
    fan_out: FanOut | None = None,
    force: bool = False,
) -> ScoreSummary:
    """Batch scoring end to end: check where it will write (``check_targets``), load and verify the model, then score
    ``source`` into ``output`` (chunks through ``fan_out`` when given, else on threads)."""
    check_targets(config, Path(source), Path(output), force)
    loaded, _ = load_model(config, alias=alias, version=version)
    scorer = make_scorer(loaded, config, config.params.score.reasons)
    cache = PredictionCache(config.path("prediction_cache")) if config.params.score.cache else None
    return score_file(Path(source), Path(output), scorer, config.params.score, cache, fan_out)
