from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from optiflow.assess.metrics import classification_metrics, confusion_table, curve_tables, select_best
from optiflow.config import HIGHER_IS_BETTER


def test_metrics_are_higher_is_better_and_correct() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    scores = np.array([0.1, 0.6, 0.7, 0.9, 0.4, 0.2])
    metrics = classification_metrics(y, scores, threshold=0.5)
    assert set(metrics) == set(HIGHER_IS_BETTER)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, scores))
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["neg_log_loss"] < 0 and metrics["neg_brier"] < 0
    better = classification_metrics(y, np.where(y == 1, 0.9, 0.1), threshold=0.5)
    assert all(better[name] > metrics[name] for name in HIGHER_IS_BETTER)


def test_select_best_breaks_ties_by_name() -> None:
    selection = select_best({"b": {"roc_auc": 0.8}, "a": {"roc_auc": 0.8}, "c": {"roc_auc": 0.7}}, "roc_auc")
    assert selection.family == "a" and [f for f, _ in selection.ranking] == ["a", "b", "c"]


def test_plot_tables_have_the_columns_dvc_templates_expect() -> None:
    y = np.array([0, 1, 1, 0])
    curves = curve_tables(y, {"m": np.array([0.2, 0.8, 0.6, 0.3])})
    assert {"family", "fpr", "tpr"} <= set(curves["roc"].columns)
    assert {"family", "recall", "precision"} <= set(curves["pr"].columns)
    assert confusion_table(y, np.array([0.2, 0.8, 0.4, 0.6]), 0.5)["predicted"].tolist() == [0, 1, 0, 1]
