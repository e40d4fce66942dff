"""Robustness under bounded perturbations: flip rates and AUC for any model with predict_proba, and the gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optiflow.assess.gates import evaluate_gates
from optiflow.assess.robustness import evaluate_robustness, perturb
from optiflow.config import Bound, GateParams, RobustnessParams

PARAMS = RobustnessParams(bounds={"tenure": Bound(absolute=1.0), "charges": Bound(relative=0.05)}, random_draws=3)


class StepOnTenure:
    """Churn probability 0.9 below 12 months of tenure, 0.1 from 12 on: a cliff the attack can push rows over."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = np.where(frame["tenure"].to_numpy() < 12, 0.9, 0.1)
        return np.column_stack([1 - p, p])


class OnlyContract:
    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = np.where(frame["contract"].to_numpy() == "monthly", 0.8, 0.2)
        return np.column_stack([1 - p, p])


def _frame() -> tuple[pd.DataFrame, np.ndarray]:
    tenure = np.arange(0.0, 40.0)
    frame = pd.DataFrame(
        {"tenure": tenure, "charges": 50.0 + tenure, "contract": np.where(tenure < 20, "monthly", "yearly")}
    )
    return frame, (tenure < 12).astype(int)


def test_perturbation_stays_within_bounds_and_non_negative() -> None:
    frame, _ = _frame()
    moved = perturb(frame, PARAMS.bounds, {"tenure": np.full(40, -1.0), "charges": np.full(40, 1.0)})
    assert moved["tenure"].min() == 0.0 and (moved["tenure"] >= frame["tenure"] - 1).all()
    np.testing.assert_allclose(moved["charges"], frame["charges"] * 1.05)
    assert moved["contract"].equals(frame["contract"])


def test_search_attack_flips_exactly_the_rows_within_reach_of_the_cliff() -> None:
    frame, y = _frame()
    report = evaluate_robustness(StepOnTenure(), frame, y, 0.5, PARAMS, seed=0)
    assert report.auc_clean == 1.0
    assert report.flip_rate_search == 2 / 40  # tenure 11 (-> 12) and 12 (-> 11)
    assert report.flip_rate_random <= report.flip_rate_search
    assert report.auc_search < report.auc_clean and report.auc_drop_search > 0


def test_the_search_follows_the_model_s_own_decisions_never_the_true_labels() -> None:
    """An attacker sees answers, not labels: each row is pushed away from the model's decision, and the labels only
    score the outcome. With every label inverted the search finds the same scores, so the AUC mirrors (1 - AUC)."""
    frame, y = _frame()
    honest = evaluate_robustness(StepOnTenure(), frame, y, 0.5, PARAMS, seed=0)
    inverted = evaluate_robustness(StepOnTenure(), frame, 1 - y, 0.5, PARAMS, seed=0)
    assert inverted.flip_rate_search == honest.flip_rate_search
    assert inverted.auc_search == pytest.approx(1.0 - honest.auc_search)


def test_a_model_that_ignores_the_perturbed_columns_is_unmoved() -> None:
    frame, _ = _frame()
    y = (frame["contract"] == "monthly").astype(int).to_numpy()
    report = evaluate_robustness(OnlyContract(), frame, y, 0.5, PARAMS, seed=0)
    assert report.flip_rate_random == report.flip_rate_search == 0.0 and report.auc_drop_search == 0.0


def test_robustness_gates_join_the_other_gates() -> None:
    params = GateParams(max_flip_rate=0.01, max_auc_drop=0.5)
    report = evaluate_gates({"roc_auc": 0.9}, params, "roc_auc", flip_rate=0.05, auc_drop=0.02)
    assert not report.passed
    assert [(r.metric, r.passed) for r in report.results if r.gate == "robustness"] == [
        ("flip_rate", False),
        ("auc_drop", True),
    ]
    assert "robustness flip_rate: observed 0.05 vs threshold <= 0.01" in report.message()
    unmeasured = evaluate_gates({"roc_auc": 0.9}, params, "roc_auc")
    assert not unmeasured.passed  # a gate that could not measure never passes
