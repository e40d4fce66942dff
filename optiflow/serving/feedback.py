"""Outcomes that arrive after the predictions: a table of entity keys and their true target, stored in the
prediction log, where they join the scores logged for those entities (`optiflow feedback labels.csv`; serve-api's
POST /feedback takes the same pairs as JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from optiflow.config import Config, DataParams
from optiflow.data.ingest import read_source
from optiflow.errors import ConfigError, DataError
from optiflow.serving.prediction_log import opened
from optiflow.serving.routing import key_column


@dataclass(frozen=True)
class FeedbackSummary:
    source: Path
    key_column: str
    rows: int
    stored: int  # distinct keys stored (a key given twice keeps its last row)
    unlabelled: int  # rows without a key or a target value, skipped


def label_pairs(frame: pd.DataFrame, source: Path, key: str, data: DataParams) -> tuple[list[tuple[str, int]], int]:
    """(entity key, 0/1) per row that has both, 1 meaning data.positive_label, and the number of rows without; a
    missing column or a target value that is neither label is a DataError naming the file, column and value."""
    for column, setting in ((key, "the key column (release.key_column or --key)"), (data.target, "data.target")):
        if column not in frame.columns:
            raise DataError(f"{source}: no column {column!r} ({setting}); it has {', '.join(map(str, frame.columns))}")
    target = frame[data.target]
    known = target.notna() & frame[key].notna()
    positive, negative = target == data.positive_label, target == data.negative_label
    other = known & ~positive & ~negative
    if other.any():
        raise DataError(
            f"{source}: column {data.target!r} holds {target[other].iloc[0]!r} in {int(other.sum())} row(s); "
            f"expected {data.positive_label!r} (data.positive_label) or {data.negative_label!r} (data.negative_label)"
        )
    keys = _key_texts(frame.loc[known, key])
    return list(zip(keys, positive[known].astype(int).tolist(), strict=True)), int((~known).sum())


def _key_texts(keys: pd.Series) -> list[str]:
    """Keys as text, as serve-api reads them: whole numbers by their digits (a CSV column with gaps reads as float)."""
    if pd.api.types.is_float_dtype(keys) and (keys == keys.round()).all():
        keys = keys.astype("int64")
    return keys.astype(str).str.slice(0, 128).tolist()


def store_feedback(config: Config, source: Path, key: str | None = None) -> FeedbackSummary:
    """Read ``source`` (CSV or Parquet) and store its labels in the project's prediction log. The key column is
    ``key``, else release.key_column, else the first of data.id_columns."""
    column = key or key_column(config)
    if column is None:
        raise ConfigError("feedback needs the entity key column: set release.key_column or data.id_columns, or --key")
    if not Path(source).is_file():
        raise DataError(f"{source}: labels file not found")
    frame = read_source(Path(source))
    pairs, unlabelled = label_pairs(frame, Path(source), column, config.params.data)
    with opened(config) as prediction_log:
        stored = prediction_log.add_labels(pairs)
    return FeedbackSummary(Path(source), column, len(frame), stored, unlabelled)
