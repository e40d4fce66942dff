"""Groups of rows and the metrics per group, defined once: the fairness report and its gates, metrics by slice and
the compression selection all label groups and score them through these two functions.

A group is one value of a column, or one combination of values of several columns (an intersection, where gaps hide
most often); its label reads ``female=1, senior_citizen=0`` and a missing value is its own group, ``<missing>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

MISSING = "<missing>"
METRICS = ("count", "positive_rate", "selection_rate", "tpr", "fpr", "precision", "roc_auc", "f1", "accuracy")


def group_labels(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One readable label per row of ``frame`` for the groups of ``columns`` (index reset)."""
    parts = [
        column + "=" + frame[column].astype(object).where(frame[column].notna(), MISSING).astype(str)
        for column in columns
    ]
    labels = parts[0]
    for part in parts[1:]:
        labels = labels + ", " + part
    return labels.reset_index(drop=True)


def per_group(
    y_true: np.ndarray, y_pred: np.ndarray, groups: pd.Series | np.ndarray, scores: np.ndarray | None = None
) -> pd.DataFrame:
    """``METRICS`` per group (rows sorted by label) with fairlearn's MetricFrame: labels ``y_pred`` (0/1) decide the
    rates; ``scores`` give ROC AUC (NaN without scores, and in a group holding one class, where it is undefined)."""
    from fairlearn.metrics import MetricFrame

    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    metrics = {
        "count": _count,
        "positive_rate": _positive_rate,
        "selection_rate": _selection_rate,
        "tpr": _tpr,
        "fpr": _fpr,
        "precision": _precision,
        "f1": _f1,
        "accuracy": _accuracy,
    }
    sample_params = None
    if scores is not None:
        metrics["roc_auc"] = _roc_auc
        sample_params = {"roc_auc": {"scores": np.asarray(scores, dtype=float)}}
    labels = pd.Series(np.asarray(groups, dtype=object), name="group")
    frame = MetricFrame(
        metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=labels, sample_params=sample_params
    )
    table = frame.by_group.reindex(columns=list(METRICS)).astype(float)
    table["count"] = table["count"].astype(int)
    table.index = table.index.astype(str)
    return table


def overall(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray | None = None) -> dict[str, float]:
    """The same metrics over all rows (what the per-group figures are compared with)."""
    return per_group(y_true, y_pred, np.full(len(y_true), "all", dtype=object), scores).iloc[0].to_dict()


def _count(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(len(y_true))


def _positive_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true)) if len(y_true) else math.nan


def _selection_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_pred)) if len(y_pred) else math.nan


def _tpr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    positives = np.asarray(y_true) == 1
    return float(np.mean(np.asarray(y_pred)[positives])) if positives.any() else math.nan


def _fpr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    negatives = np.asarray(y_true) == 0
    return float(np.mean(np.asarray(y_pred)[negatives])) if negatives.any() else math.nan


def _precision(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    flagged = np.asarray(y_pred) == 1
    return float(np.mean(np.asarray(y_true)[flagged])) if flagged.any() else math.nan


def _f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, zero_division=0))


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y_true, y_pred))


def _roc_auc(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true)
    return float(roc_auc_score(y_true, np.asarray(scores))) if len(np.unique(y_true)) == 2 else math.nan
