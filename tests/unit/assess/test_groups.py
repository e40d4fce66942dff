"""Metrics per group: the same figures as fairlearn's MetricFrame, which `per_group` no longer runs through."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from optiflow.assess.groups import METRICS, overall, per_group


def _by_metric_frame(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """The reference: fairlearn's MetricFrame over sklearn's own metric functions."""
    from fairlearn.metrics import MetricFrame

    def one_class_safe_auc(truth: np.ndarray, _: np.ndarray, scores: np.ndarray) -> float:
        return roc_auc_score(truth, scores) if len(np.unique(truth)) == 2 else np.nan

    def rate_among(mask_of: str):
        def rate(truth: np.ndarray, predicted: np.ndarray) -> float:
            mask = {"tpr": truth == 1, "fpr": truth == 0, "precision": predicted == 1}[mask_of]
            values = (truth if mask_of == "precision" else predicted)[mask]
            return float(np.mean(values)) if mask.any() else np.nan

        return rate

    metrics = {
        "count": lambda truth, _: float(len(truth)),
        "positive_rate": lambda truth, _: float(np.mean(truth)),
        "selection_rate": lambda _, predicted: float(np.mean(predicted)),
        "tpr": rate_among("tpr"),
        "fpr": rate_among("fpr"),
        "precision": rate_among("precision"),
        "roc_auc": one_class_safe_auc,
        "f1": lambda truth, predicted: f1_score(truth, predicted, zero_division=0),
        "accuracy": accuracy_score,
    }
    frame = MetricFrame(
        metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=pd.Series(groups, name="group"),
        sample_params={"roc_auc": {"scores": scores}},
    )  # fmt: skip
    return frame.by_group.reindex(columns=list(METRICS)).astype(float)


@pytest.mark.parametrize("seed", range(5))
def test_per_group_figures_equal_fairlearn_metric_frame(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    groups = rng.choice(["a=0", "a=1", "b=x", "tiny"], size=n, p=[0.4, 0.3, 0.29, 0.01]).astype(object)
    y_true = rng.integers(0, 2, n)
    y_true[groups == "tiny"] = 1  # one class only: ROC AUC and FPR undefined there
    scores = np.round(rng.random(n), 2)  # tied scores too
    y_pred = (scores > rng.uniform(0.2, 0.9)).astype(int)

    ours = per_group(y_true, y_pred, groups, scores, expected=["zzz-empty"])
    reference = _by_metric_frame(y_true, y_pred, groups, scores)
    present = ours.drop(index="zzz-empty")
    assert list(present.index) == list(reference.index.astype(str))
    label_metrics = present.drop(columns=["count", "roc_auc"]).to_numpy()
    np.testing.assert_array_equal(label_metrics, reference.drop(columns=["count", "roc_auc"]).to_numpy())
    # ROC AUC by ranks, sklearn's by the trapezoid rule: the same area, rounded another way
    np.testing.assert_allclose(present["roc_auc"], reference["roc_auc"], rtol=1e-12, atol=0)
    assert present["count"].tolist() == reference["count"].astype(int).tolist()
    assert ours.loc["zzz-empty", "count"] == 0 and ours.loc["zzz-empty"].drop("count").isna().all()
    assert np.isnan(ours.loc["tiny", "roc_auc"]) and np.isnan(ours.loc["tiny", "fpr"])


def test_without_scores_auc_is_nan_and_overall_is_one_group() -> None:
    y_true, y_pred = np.array([1, 0, 1, 0, 0]), np.array([1, 0, 0, 1, 0])
    table = per_group(y_true, y_pred, np.array(["g"] * 5, dtype=object))
    assert table["roc_auc"].isna().all() and table.index.name == "group"
    figures = overall(y_true, y_pred)
    assert figures["f1"] == pytest.approx(0.5) and figures["accuracy"] == pytest.approx(0.6)
    assert figures["tpr"] == 0.5 and figures["fpr"] == pytest.approx(1 / 3) and figures["count"] == 5
