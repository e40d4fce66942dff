"""Synthetic prediction logs as serve-api writes them during a shadow release: both models score the same rows, the
champion answers, and some rows have their outcome joined."""

from __future__ import annotations

import numpy as np
import pandas as pd

from optiflow.serving.prediction_log import CHALLENGER, CHAMPION, PredictionLog, Record


def synthetic_scores(rng: np.random.Generator, labels: np.ndarray, signal: float) -> np.ndarray:
    """Calibrated-looking probabilities whose ranking quality grows with ``signal``."""
    logits = signal * (labels - 0.5) * 2 + rng.normal(0, 1, len(labels)) - 1.0
    return 1 / (1 + np.exp(-logits))


def synthetic_log(
    rows: int,
    champion_signal: float,
    challenger_signal: float,
    labelled: int,
    seed: int = 0,
    challenger_errors: int = 0,
    at: float = 200.0,
) -> pd.DataFrame:
    """A shadow release's log: both models score the same rows; the champion answers; ``labelled`` rows have their
    outcome joined."""
    rng = np.random.default_rng(seed)
    outcome = (rng.random(rows) < 0.27).astype(int)
    frames = []
    for version, role, signal, answered in (
        ("1", CHAMPION, champion_signal, True),
        ("2", CHALLENGER, challenger_signal, False),
    ):
        probability = synthetic_scores(rng, outcome, signal)
        error = np.array([None] * rows, dtype=object)
        if role == CHALLENGER and challenger_errors:
            error[:challenger_errors] = "RuntimeError: boom"
            probability[:challenger_errors] = np.nan
        frames.append(
            pd.DataFrame(
                {
                    "request_id": [f"r{i}" for i in range(rows)],
                    "row": 0,
                    "at": at,
                    "model_version": version,
                    "role": role,
                    "answered": answered,
                    "entity_key": [f"c{i}" for i in range(rows)],
                    "probability": probability,
                    "label": (probability >= 0.3).astype(int),
                    "latency_ms": rng.uniform(1, 5, rows),
                    "error": error,
                    "outcome": np.where(np.arange(rows) < labelled, outcome, np.nan),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def write_log(prediction_log: PredictionLog, log: pd.DataFrame) -> None:
    """Write a synthetic log's scores and outcomes through the prediction log's own API."""
    records = [
        Record(**{key: _plain(value) for key, value in row.items() if key != "outcome"})
        for row in log.to_dict("records")
    ]
    prediction_log.record(records)
    prediction_log.flush()
    labelled = log.dropna(subset=["outcome"]).drop_duplicates("entity_key")
    prediction_log.add_labels(zip(labelled["entity_key"], labelled["outcome"].astype(int), strict=True))


def _plain(value: object) -> object:
    """A Python value for the database driver: numpy scalars unwrapped, NaN as NULL."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value
