"""Drift of a new batch against the training reference sample, with Evidently (0.7 API).

Per-column drift and the share of drifted feature columns, drift of the champion's scores (prediction drift), and
the champion's quality on the batch when it carries labels.

Each column gets the test that fits its type, its number of values and the batch's size
(optiflow.data.drift_tests.choose_tests): a distance only where its own noise stays below its threshold, otherwise a
two-sample test at monitor.false_alarm_rate over the number of tests. Big batches are checked on a seeded sample.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optiflow.assess.metrics import classification_metrics
from optiflow.config import DataParams, MonitorParams
from optiflow.data.drift_tests import PREDICTION, TWO_SAMPLE_CHISQUARE, choose_tests, describe_test
from optiflow.data.schema import Schema
from optiflow.io import write_with

log = logging.getLogger(__name__)

MIN_EXPECTED = 5  # rare values are pooled so that every cell of the chi-square table expects at least this many rows


def two_sample_chisquare(
    reference: pd.Series, current: pd.Series, feature_type: Any, threshold: float
) -> tuple[float, bool]:
    """Evidently stattest: chi-square test of homogeneity of the two samples' value counts (missing values left
    out), values too rare to expect MIN_EXPECTED rows in either sample pooled into one cell. Unlike a goodness-of-fit
    test against the reference's shares, it counts the reference's own sampling noise, and a value the reference
    sample never saw does not make an infinite statistic."""
    from scipy.stats import chi2_contingency

    counts = pd.concat([reference.value_counts(), current.value_counts()], axis=1).fillna(0.0).to_numpy()
    totals = counts.sum(axis=0)
    if totals.min() == 0:
        return 1.0, False
    expected = counts.sum(axis=1, keepdims=True) * totals / totals.sum()
    rare = expected.min(axis=1) < MIN_EXPECTED
    table = np.vstack([counts[~rare], counts[rare].sum(axis=0, keepdims=True)]) if rare.any() else counts
    table = table[table.sum(axis=1) > 0]
    if len(table) < 2:
        return 1.0, False
    p_value = float(chi2_contingency(table, correction=False)[1])
    return p_value, p_value < threshold


def _register_two_sample_chisquare() -> None:
    """Make TWO_SAMPLE_CHISQUARE a method Evidently knows (idempotent: the registry is a mapping by name)."""
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    test = StatTest(
        name=TWO_SAMPLE_CHISQUARE,
        display_name="two-sample chi-square p_value",
        allowed_feature_types=[ColumnType.Categorical],
    )
    register_stattest(test, default_impl=two_sample_chisquare)


@dataclass(frozen=True)
class Quality:
    """The champion on a labelled batch next to its own test figures (same decision threshold)."""

    roc_auc: float
    f1: float
    champion_roc_auc: float
    champion_f1: float

    @property
    def drop(self) -> float:
        """How far ROC AUC fell below the champion's test figure (negative: it improved)."""
        return self.champion_roc_auc - self.roc_auc


@dataclass(frozen=True)
class DriftResult:
    rows: int  # rows in the batch
    rows_checked: int  # rows the drift check used (a sample of bigger batches)
    column_scores: dict[str, float]  # drift score per feature column: a p-value or a distance (see column_tests)
    drifted_columns: tuple[str, ...]
    drift_share: float  # drifted feature columns / feature columns
    prediction_drift: float | None  # drift score of the champion's scores, None when not scored
    prediction_drifted: bool
    quality: Quality | None  # None for an unlabelled batch (or one holding a single class)
    column_tests: dict[str, str] = field(default_factory=dict)  # per column (and the scores): the test, as read

    @property
    def quality_drop(self) -> float | None:
        return None if self.quality is None else self.quality.drop

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "drifted_columns": list(self.drifted_columns),
            "quality_drop": self.quality_drop,
        }


def batch_quality(
    y_true: np.ndarray, scores: np.ndarray, threshold: float, champion_test: dict[str, float]
) -> Quality | None:
    """ROC AUC and F1 on the batch; None when the labels hold one class (ROC AUC is undefined there)."""
    if len(np.unique(y_true)) < 2:
        return None
    metrics = classification_metrics(y_true, scores, threshold)
    return Quality(metrics["roc_auc"], metrics["f1"], champion_test["roc_auc"], champion_test["f1"])


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: Schema,
    params: MonitorParams,
    *,
    reference_scores: np.ndarray | None = None,
    current_scores: np.ndarray | None = None,
    quality: Quality | None = None,
    rows: int | None = None,
) -> tuple[DriftResult, Any]:
    """Run the Evidently report; returns the figures the decision needs and the snapshot (save_html/save_json).

    0/1 flags are declared categorical (the schema says so), so they are compared as categories. Each column's
    test comes from ``choose_tests`` for this batch's size. The report holds the count and share of drifted feature
    columns and one drift widget per column (its test, score and distributions): the metrics DataDriftPreset is made
    of, without the preset's legacy summary table, which tested every column once more to draw it and took ~40% of
    the check. The count reads the per-column results (optiflow.monitoring.drift_count).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    from optiflow.monitoring.drift_count import DriftedFeatureCount

    _register_two_sample_chisquare()
    features = list(schema.features)
    scored = reference_scores is not None and current_scores is not None
    numeric = list(schema.numeric) + ([PREDICTION] if scored else [])
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=list(schema.categorical))
    ref, cur = _as_categories(reference, current, features, schema.categorical)
    if scored:
        ref[PREDICTION], cur[PREDICTION] = reference_scores, current_scores
    tests = choose_tests(ref, numeric, list(schema.categorical), len(current), params)
    count = DriftedFeatureCount(
        columns=features,
        methods={column: tests[column].method for column in features},
        thresholds={column: tests[column].threshold for column in features},
        drift_share=params.drift_share,
    )
    metrics: list[Any] = [count, *count.column_drifts()]
    if scored:
        test = tests[PREDICTION]
        metrics.append(ValueDrift(column=PREDICTION, method=test.method, threshold=test.threshold))
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    scores, drifted = _column_drift(json.loads(snapshot.json()))
    feature_drifted = tuple(column for column in features if drifted.get(column, False))
    result = DriftResult(
        rows=len(current) if rows is None else rows,
        rows_checked=len(current),
        column_scores={column: scores[column] for column in features},
        drifted_columns=feature_drifted,
        drift_share=len(feature_drifted) / len(features),
        prediction_drift=scores.get(PREDICTION) if scored else None,
        prediction_drifted=bool(drifted.get(PREDICTION, False)),
        quality=quality,
        column_tests={column: describe_test(test) for column, test in tests.items()},
    )
    return result, snapshot


def _as_categories(
    reference: pd.DataFrame, current: pd.DataFrame, features: list[str], categorical: tuple[str, ...]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """New frames of the feature columns, the categorical ones as pandas categories (both samples' values, in order
    of first appearance, coded in one pass over the two).

    The counts, and so every test and widget, are those of the raw values; but Evidently copies the whole current
    frame once per numeric column, and copying Python strings grows with rows x columns x numeric columns, where
    category codes are a plain memory copy. The frames are built whole: assigning columns one by one into a copy
    copies its blocks again and again."""
    split = len(reference)
    coded: dict[str, tuple[pd.Categorical, pd.Categorical]] = {}
    for column in categorical:
        codes, values = pd.factorize(pd.concat([reference[column], current[column]], ignore_index=True))
        coded[column] = (
            pd.Categorical.from_codes(codes[:split], categories=values),
            pd.Categorical.from_codes(codes[split:], categories=values),
        )

    def rebuilt(frame: pd.DataFrame, side: int) -> pd.DataFrame:
        columns = {column: coded[column][side] if column in coded else frame[column].array for column in features}
        return pd.DataFrame(columns, index=frame.index)

    return rebuilt(reference, 0), rebuilt(current, 1)


def _column_drift(document: dict[str, Any]) -> tuple[dict[str, float], dict[str, bool]]:
    """Per column: the ValueDrift score, and whether its test failed (drifted), whatever the method's direction."""
    scores: dict[str, float] = {}
    for metric in document["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift"):
            scores[config["column"]] = float(metric["value"])
    drifted: dict[str, bool] = {}
    for test in document["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith(":ValueDrift"):
            drifted[params["column"]] = test["status"] == "FAIL"
    return scores, drifted


def save_snapshot(snapshot: Any, html_path: Path, json_path: Path) -> None:
    """Evidently's HTML (for people) and JSON (for tools), each written atomically."""
    write_with(html_path, lambda staging: snapshot.save_html(str(staging)))
    write_with(json_path, lambda staging: snapshot.save_json(str(staging)))


def label_array(frame: pd.DataFrame, data: DataParams) -> np.ndarray | None:
    """The batch's labels as 0/1, or None when the batch carries none."""
    if data.target not in frame.columns:
        return None
    return (frame[data.target] == data.positive_label).to_numpy(dtype=np.int64)
