"""Group fairness: metrics per group and intersection, disparity gates, and ThresholdOptimizer mitigation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from optiflow.assess.fairness import (
    columns_to_mitigate,
    evaluate_mitigation,
    fairness_gates,
    group_metrics,
    label_metrics,
    mitigate,
)
from optiflow.config import FairnessParams
from optiflow.data.schema import Schema
from optiflow.modeling.families import build_pipeline
from tests.unit.conftest import churn_like

SEED = 7


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def all_gates(**changes: object) -> FairnessParams:
    """Every fairness gate on, demographic parity included (the shipped defaults switch demographic parity off)."""
    settings = {
        "max_demographic_parity_difference": 0.1,
        "min_demographic_parity_ratio": 0.8,
        "max_equalized_odds_difference": 0.1,
        "min_group_size": 30,
        "mitigate": False,
        "constraint": "demographic_parity",
    }
    return FairnessParams(**{**settings, **changes})


def dataset(n: int = 600, seed: int = SEED) -> pd.DataFrame:
    """Churn-like rows where the label itself depends on the 0/1 sensitive column ``group``."""
    return churn_like(n, seed)


def test_biased_scores_fail_the_demographic_parity_gate_and_fair_ones_pass():
    frame = dataset()
    biased = sigmoid(frame["x1"] + 2.5 * frame["group"] - 1.0).to_numpy()
    fair = sigmoid(frame["x1"]).to_numpy()
    params = all_gates(max_equalized_odds_difference=None)

    biased_gates = fairness_gates(group_metrics(frame["y"], biased, 0.5, frame[["group"]]), params)
    fair_gates = fairness_gates(group_metrics(frame["y"], fair, 0.5, frame[["group"]]), params)

    failed = {result.metric for result in biased_gates if not result.passed}
    assert failed == {"demographic_parity_difference[group]", "demographic_parity_ratio[group]"}
    difference = next(result for result in biased_gates if result.metric.startswith("demographic_parity_difference"))
    assert difference.observed > 0.3 and difference.threshold == 0.1 and difference.comparison == "<="
    assert all(result.passed for result in fair_gates)


def test_report_covers_each_feature_and_their_intersection():
    frame = dataset()
    scores = sigmoid(frame["x1"].to_numpy())
    report = group_metrics(frame["y"], scores, 0.5, frame[["group", "other"]])
    assert [feature.name for feature in report.features] == ["group", "other", "group & other"]
    intersection = report.features[-1]
    assert list(intersection.groups.index) == [
        "group=0, other=0",
        "group=0, other=1",
        "group=1, other=0",
        "group=1, other=1",
    ]
    assert intersection.groups["count"].sum() == len(frame)
    table = report.table()
    assert list(table.columns) == ["feature", "group", "count", "selection_rate", "tpr", "fpr", "precision", "roc_auc"]
    assert len(table) == 2 + 2 + 4
    one = frame["group"] == 1
    row = table[(table["feature"] == "group") & (table["group"] == "group=1")].iloc[0]
    predicted = scores[one] >= 0.5
    assert row["selection_rate"] == pytest.approx(predicted.mean())
    assert row["tpr"] == pytest.approx(predicted[frame["y"][one].to_numpy() == 1].mean())
    assert report.overall["count"] == len(frame)


def test_gates_use_the_same_disparities_as_fairlearn_when_every_group_is_large_enough():
    frame = dataset()
    report = group_metrics(frame["y"], sigmoid(frame["x1"] + frame["group"]).to_numpy(), 0.5, frame[["group", "other"]])
    results = {result.metric: result.observed for result in fairness_gates(report, all_gates(min_group_size=1))}
    for feature in report.features:
        for metric in ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference"):
            assert results[f"{metric}[{feature.name}]"] == pytest.approx(getattr(feature, metric))


def test_single_class_group_gives_nan_auc_and_the_report_stays_json_safe():
    y = np.array([0, 1, 0, 1, 0, 0, 0])
    scores = np.array([0.2, 0.8, 0.4, 0.6, 0.1, 0.3, 0.7])
    sensitive = pd.DataFrame({"region": ["a", "a", "a", "a", "b", "b", "b"]})
    report = group_metrics(y, scores, 0.5, sensitive)
    groups = report.features[0].groups
    assert groups.loc["region=a", "roc_auc"] == 1.0
    assert np.isnan(groups.loc["region=b", "roc_auc"]) and np.isnan(groups.loc["region=b", "tpr"])
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["features"]["region"]["groups"]["region=b"]["roc_auc"] is None
    assert payload["features"]["region"]["groups"]["region=b"]["count"] == 3


def test_small_groups_are_reported_but_left_out_of_the_gates():
    frame = dataset()
    frame.loc[:9, "other"] = 2  # a third group of ten rows
    report = group_metrics(frame["y"], sigmoid(frame["x1"]).to_numpy(), 0.5, frame[["other"]])
    assert "other=2" in report.features[0].groups.index
    results = fairness_gates(report, all_gates(min_group_size=30))
    assert all("other=2" in result.detail for result in results)

    tiny = fairness_gates(report, all_gates(min_group_size=10_000))
    assert all(result.passed and result.observed is None and "not checked" in result.detail for result in tiny)


def test_label_predictions_have_no_auc():
    frame = dataset(n=100)
    report = label_metrics(frame["y"], frame["x1"] > 0, frame[["group"]])
    assert report.threshold is None
    assert report.features[0].groups["roc_auc"].isna().all() and np.isnan(report.overall["roc_auc"])
    json.dumps(report.to_dict(), allow_nan=False)


def test_threshold_optimizer_narrows_the_gap_of_a_biased_model():
    frame = dataset(n=900)
    train, valid, test = frame.iloc[:450], frame.iloc[450:675], frame.iloc[675:]
    schema = Schema(numeric=("x1", "x2"), categorical=("plan", "group"))
    model = build_pipeline("logistic_regression", {}, schema, SEED).fit(train[list(schema.features)], train["y"])
    features = list(schema.features)

    mitigated = mitigate(model, valid[features], valid["y"], valid[["group"]], "demographic_parity", SEED)
    predictions = mitigated.predict(test[features], test[["group"]])
    assert np.array_equal(predictions, mitigated.predict(test[features], test[["group"]]))  # seeded draw
    thresholds = mitigated.thresholds()
    assert set(thresholds) == {"group=0", "group=1"}
    assert thresholds["group=1"]["threshold0"] > thresholds["group=0"]["threshold0"]  # the favoured group needs more
    json.dumps(thresholds, allow_nan=False)

    scores = model.predict_proba(test[features])[:, 1]
    result = evaluate_mitigation(test["y"], scores, 0.5, predictions, test[["group"]])
    before = result.baseline.features[0].demographic_parity_difference
    after = result.mitigated.features[0].demographic_parity_difference
    assert before > 0.3
    assert after < before / 2
    gate = all_gates(max_equalized_odds_difference=None, min_demographic_parity_ratio=None)
    assert not all(check.passed for check in fairness_gates(result.baseline, gate))
    assert result.accuracy_cost == pytest.approx(
        result.baseline_metrics["accuracy"] - result.mitigated_metrics["accuracy"]
    )
    gaps = result.gaps().set_index(["feature", "metric"])
    assert gaps.loc[("group", "demographic_parity_difference"), "mitigated"] == pytest.approx(after)
    json.dumps(result.to_dict(), allow_nan=False)


def test_params_are_strict_and_thresholds_can_be_switched_off():
    params = all_gates(max_demographic_parity_difference=None)
    assert params.constraint == "demographic_parity" and params.mitigation == "threshold_optimizer"
    with pytest.raises(ValueError):
        FairnessParams(constraint="equal_opportunity")
    with pytest.raises(ValueError):
        FairnessParams(max_dp=0.1)
    frame = dataset(n=200)
    report = group_metrics(frame["y"], sigmoid(frame["x1"]).to_numpy(), 0.5, frame[["group"]])
    assert not [r for r in fairness_gates(report, params) if r.metric.startswith("demographic_parity_difference")]


def test_only_the_failing_columns_are_proposed_for_mitigation():
    frame = dataset()
    sensitive = frame[["group", "other"]]
    params = all_gates(max_equalized_odds_difference=None)
    biased = sigmoid(frame["x1"] + 2.5 * frame["group"] - 1.0).to_numpy()
    assert columns_to_mitigate(group_metrics(frame["y"], biased, 0.5, sensitive), params) == ("group",)

    # Favouring rows where group == other leaves each column's selection rates equal but splits the intersection.
    same = (frame["group"] == frame["other"]).to_numpy()
    crossed = sigmoid(frame["x1"].to_numpy() + np.where(same, 2.0, -2.0))
    report = group_metrics(frame["y"], crossed, 0.5, sensitive)
    assert [f.name for f in report.features if f.demographic_parity_difference > 0.3] == ["group & other"]
    assert columns_to_mitigate(report, params) == ("group", "other")

    fair = sigmoid(frame["x1"]).to_numpy()
    lenient = params.model_copy(update={"max_demographic_parity_difference": 0.3, "min_demographic_parity_ratio": 0.5})
    assert columns_to_mitigate(group_metrics(frame["y"], fair, 0.5, sensitive), lenient) == ()


def test_report_gates_and_slices_share_one_group_definition_intersections_included():
    """optiflow.assess.groups labels every group: the fairness report, the gates judged on it and the metrics by
    slice name and count the same groups, the intersection of the sensitive columns too."""
    from optiflow.assess.calibration import slice_metrics
    from optiflow.assess.groups import group_labels

    frame = dataset()
    scores = sigmoid(frame["x1"] + frame["group"]).to_numpy()
    report = group_metrics(frame["y"], scores, 0.5, frame[["group", "other"]])
    slices = slice_metrics(frame, frame["y"].to_numpy(), scores, 0.5, [("group", "other")])
    intersection = report.features[-1]
    labels = sorted(group_labels(frame, ["group", "other"]).unique())
    assert list(intersection.groups.index) == labels == sorted(slices["value"])
    assert intersection.groups["count"].tolist() == slices.set_index("value").loc[labels, "count"].tolist()
    gate = next(r for r in fairness_gates(report, all_gates(min_group_size=1)) if r.metric.endswith("[group & other]"))
    assert gate.metric == "demographic_parity_difference[group & other]"
    rates = intersection.groups["selection_rate"]
    assert gate.observed == pytest.approx(rates.max() - rates.min())
