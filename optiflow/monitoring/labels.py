"""Labels that arrive after a batch was checked: the realised metrics are computed on the scores stored when the
batch was checked (`scores.parquet` in its report folder, with the row keys and whether the champion learnt from
each row), stored beside the estimate in the batch's summary and history row, and the shift diagnosed again now
that prior and concept shift can be told apart. The labelled rows are kept for later retraining windows unless the
batch sits in quarantine."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optiflow.config import Config
from optiflow.data.keys import KEY_COLUMN
from optiflow.errors import DataError
from optiflow.io import read_json, read_parquet, write_json, write_parquet, write_with
from optiflow.monitoring.batches import keep_batch, performance_columns, read_batch, read_history
from optiflow.monitoring.diagnosis import diagnose
from optiflow.monitoring.drift import label_array
from optiflow.monitoring.estimate import calibration_check, realised_metrics
from optiflow.monitoring.retraining import NEVER_TRAINED_ON

SCORES_FILE = "scores.parquet"


def write_scores(folder: Path, checked: pd.DataFrame, scores: np.ndarray, seen: frozenset[str] | None) -> Path:
    """The champion's score per checked row, by key, and whether it learnt from the row (its labels never judge it)."""
    keys = checked[KEY_COLUMN].astype(str)
    table = pd.DataFrame({KEY_COLUMN: keys, "score": scores, "seen": keys.isin(seen or frozenset()).to_numpy()})
    target = folder / SCORES_FILE
    write_parquet(target, table)
    return target


def attach_labels(config: Config, identifier: str, path: Path) -> dict[str, Any]:
    """Realised metrics of a checked batch from its labelled rows in ``path``; returns the updated summary."""
    data, monitor = config.params.data, config.params.monitor
    folder = config.path("monitoring") / identifier
    if not (folder / SCORES_FILE).is_file():
        raise DataError(f"{folder / SCORES_FILE}: batch {identifier!r} was not checked with its scores stored")
    summary = read_json(folder / "summary.json")
    frame = read_batch(path, data)
    if data.target not in frame.columns:
        raise DataError(f"{path}: column {data.target!r} missing: no labels to attach to batch {identifier!r}")
    scores = read_parquet(folder / SCORES_FILE)
    joined = scores[~scores["seen"]].merge(frame[[KEY_COLUMN, data.target]].drop_duplicates(KEY_COLUMN), on=KEY_COLUMN)
    if not len(joined):
        raise DataError(f"{path}: no row key matches a scored row of batch {identifier!r} the champion never saw")
    y, p = label_array(joined, data), joined["score"].to_numpy(dtype=float)
    performance = summary["performance"]
    threshold = float(performance["estimated"]["threshold"])
    performance["realised"] = realised_metrics(y, p, threshold)
    performance["batch_calibration"] = asdict(calibration_check(y, p))
    summary["diagnosis"] = diagnose(
        performance,
        drifted_columns=summary["drifted_columns"],
        prediction_drifted=summary["prediction_drifted"],
        upstream_breaks=summary.get("quarantine") or (),
        z=monitor.noise_z,
    ).to_dict()
    summary["labelled_rows"], summary["quality_rows"] = len(frame), len(joined)
    write_json(folder / "summary.json", summary)
    _update_history(config, identifier, summary)
    history = read_history(config.path("monitoring_history"))
    decisions = history.loc[history["batch_id"] == identifier, "decision"]
    if not summary.get("quarantine") and not (len(decisions) and decisions.iloc[-1] in NEVER_TRAINED_ON):
        keep_batch(config, identifier, frame)
    return summary


def _update_history(config: Config, identifier: str, summary: dict[str, Any]) -> None:
    path = config.path("monitoring_history")
    history = read_history(path)
    rows = history.index[history["batch_id"] == identifier]
    if not len(rows):
        raise DataError(f"{path}: batch {identifier!r} has no history row to attach labels to")
    values = {**performance_columns(summary), "labelled_rows": summary["labelled_rows"]}
    for column, value in values.items():
        if column not in history.columns:
            history[column] = None
        history[column] = history[column].astype(object)
        history.loc[rows[-1], column] = value
    write_with(path, lambda staging: history.to_csv(staging, index=False))
