"""Promotion gates: built cases that pass, fail, and list every failure with observed vs threshold."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from optiflow.assess.gates import (
    GateReport,
    GateResult,
    at_least,
    at_most,
    champion_gates,
    evaluate_gates,
    not_evaluated,
)
from optiflow.config import GateParams

GOOD = {"roc_auc": 0.85, "pr_auc": 0.65, "f1": 0.60, "accuracy": 0.80, "neg_log_loss": -0.42, "neg_brier": -0.14}


def params(**overrides) -> GateParams:
    base = {
        "min_quality": {"roc_auc": 0.80, "f1": 0.50},
        "max_latency_ms_per_1k_rows": 50.0,
        "max_model_bytes": 1_000_000,
        "min_delta": 0.0,
        "guard_tolerances": {"neg_brier": 0.01},
        "max_flip_rate": None,  # the robustness gates have their own tests (test_robustness.py)
        "max_auc_drop": None,
    }
    return GateParams(**{**base, **overrides})


def test_at_least_and_at_most_compare_and_treat_unmeasured_as_failed():
    assert at_least("quality", "roc_auc", 0.81, 0.80).passed
    assert at_least("quality", "roc_auc", 0.80, 0.80).passed
    assert not at_least("quality", "roc_auc", 0.79, 0.80).passed
    assert at_most("budget", "model_bytes", 10.0, 10.0).passed
    assert not at_most("budget", "model_bytes", 11.0, 10.0).passed
    for missing in (None, float("nan")):
        result = at_least("quality", "roc_auc", missing, 0.8)
        assert not result.passed and result.observed is None and "not measured" in result.describe()


def test_every_gate_passes_for_a_good_challenger():
    report = evaluate_gates(
        GOOD,
        params(),
        "roc_auc",
        fairness=[at_most("fairness", "demographic_parity_difference[female]", 0.02, 0.1)],
        latency_ms_per_1k_rows=12.0,
        model_bytes=200_000,
        champion_metrics={**GOOD, "roc_auc": 0.84},
    )
    assert report.passed and report.failures == ()
    assert {result.gate for result in report.results} == {"quality", "fairness", "budget", "champion"}
    assert report.message() == f"all {len(report.results)} gates passed"


def test_message_lists_every_failure_with_observed_vs_threshold():
    challenger = {**GOOD, "roc_auc": 0.75, "f1": 0.40, "neg_brier": -0.20}
    report = evaluate_gates(
        challenger,
        params(),
        "roc_auc",
        fairness=[at_most("fairness", "demographic_parity_difference[senior_citizen]", 0.25, 0.1)],
        latency_ms_per_1k_rows=80.0,
        model_bytes=2_000_000,
        champion_metrics=GOOD,
    )
    assert not report.passed
    failed = {(result.gate, result.metric) for result in report.failures}
    assert failed == {
        ("quality", "roc_auc"),
        ("quality", "f1"),
        ("fairness", "demographic_parity_difference[senior_citizen]"),
        ("budget", "latency_ms_per_1k_rows"),
        ("budget", "model_bytes"),
        ("champion", "roc_auc"),
        ("champion", "neg_brier"),
    }
    message = report.message()
    assert message.startswith("7 of 7 gates failed")
    for expected in (
        "quality roc_auc: observed 0.75 vs threshold >= 0.8",
        "quality f1: observed 0.4 vs threshold >= 0.5",
        "fairness demographic_parity_difference[senior_citizen]: observed 0.25 vs threshold <= 0.1",
        "budget latency_ms_per_1k_rows: observed 80 vs threshold <= 50",
        "budget model_bytes: observed 2e+06 vs threshold <= 1e+06",
        "champion roc_auc: observed 0.75 vs threshold >= 0.85",
        "champion neg_brier: observed -0.2 vs threshold >= -0.15",
    ):
        assert expected in message


def test_worse_challenger_is_rejected_and_better_one_passes():
    champion = dict(GOOD)
    worse = champion_gates({**GOOD, "roc_auc": 0.84}, champion, "roc_auc", 0.0, {})
    better = champion_gates({**GOOD, "roc_auc": 0.86}, champion, "roc_auc", 0.0, {})
    assert not worse[0].passed and worse[0].threshold == pytest.approx(0.85)
    assert better[0].passed


def test_min_delta_requires_a_real_improvement():
    challenger = {**GOOD, "roc_auc": 0.855}
    assert not champion_gates(challenger, GOOD, "roc_auc", 0.01, {})[0].passed
    assert champion_gates(challenger, GOOD, "roc_auc", 0.005, {})[0].passed


def test_guard_metric_may_drop_within_its_tolerance_only():
    better_primary = {**GOOD, "roc_auc": 0.90}
    within = champion_gates({**better_primary, "neg_brier": -0.145}, GOOD, "roc_auc", 0.0, {"neg_brier": 0.01})
    beyond = champion_gates({**better_primary, "neg_brier": -0.16}, GOOD, "roc_auc", 0.0, {"neg_brier": 0.01})
    assert all(result.passed for result in within)
    assert [result.metric for result in beyond if not result.passed] == ["neg_brier"]


def test_absent_champion_passes_the_comparison_saying_so():
    report = evaluate_gates(GOOD, params(), "roc_auc", latency_ms_per_1k_rows=1.0, model_bytes=1)
    champion = [result for result in report.results if result.gate == "champion"]
    assert len(champion) == 1 and champion[0].passed and champion[0].detail == "no champion"
    assert report.passed


def test_champion_without_the_metric_fails_instead_of_passing_silently():
    results = champion_gates(GOOD, {"pr_auc": 0.6}, "roc_auc", 0.0, {})
    assert not results[0].passed and results[0].detail == "champion has no roc_auc"


def test_unset_budgets_are_not_checked_but_unmeasured_ones_fail():
    unset = evaluate_gates(GOOD, params(max_latency_ms_per_1k_rows=None, max_model_bytes=None), "roc_auc")
    assert not [result for result in unset.results if result.gate == "budget"]
    unmeasured = evaluate_gates(GOOD, params(), "roc_auc")
    assert {result.metric for result in unmeasured.failures} == {"latency_ms_per_1k_rows", "model_bytes"}


def test_params_are_strict():
    with pytest.raises(ValidationError, match="unknown metric"):
        GateParams(min_quality={"auc": 0.8})
    with pytest.raises(ValidationError, match="tolerances must be >= 0"):
        GateParams(guard_tolerances={"f1": -0.1})
    with pytest.raises(ValidationError, match="Extra inputs"):
        GateParams(max_bytes=1)
    with pytest.raises(ValidationError):
        params().min_delta = 1.0  # frozen


def test_unknown_primary_metric_is_an_error():
    with pytest.raises(ValueError, match="primary metric"):
        evaluate_gates(GOOD, params(), "auc")


def test_report_is_json_safe():
    report = GateReport(
        (
            at_least("quality", "roc_auc", float("nan"), 0.8),
            GateResult("champion", "roc_auc", 0.8, None, ">=", True, "no champion"),
        )
    )
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["passed"] is False
    assert payload["results"][0]["observed"] is None and payload["results"][1]["threshold"] is None


def test_a_gate_with_nothing_to_check_is_not_evaluated_and_blocks_by_default():
    nothing = not_evaluated("fairness", "equalized_odds_difference", 0.3, "<=", "no data.sensitive_features declared")
    report = evaluate_gates(
        GOOD,
        params(max_flip_rate=0.1),
        "roc_auc",
        fairness=[nothing],
        perturbed=(),
        latency_ms_per_1k_rows=1,
        model_bytes=1,
    )
    blocked = {(r.gate, r.metric): r for r in report.results if not r.evaluated}
    assert set(blocked) == {("fairness", "equalized_odds_difference"), ("robustness", "flip_rate")}
    assert not report.passed and all(r.status == "not evaluated" and r.observed is None for r in blocked.values())
    message = report.message()
    assert (
        "2 of" in message and "fairness equalized_odds_difference: not evaluated (no data.sensitive_features" in message
    )
    assert "robustness flip_rate: not evaluated (nothing to perturb" in message
    assert "add 'robustness' to gates.allow_not_evaluated to release without it" in message
    assert "passed" not in [r.status for r in blocked.values()]


def test_the_policy_can_let_a_not_evaluated_gate_release_and_says_so():
    nothing = not_evaluated("fairness", "equalized_odds_difference", 0.3, "<=", "fewer than 2 groups large enough")
    allowed = params(allow_not_evaluated=["fairness"])
    report = evaluate_gates(GOOD, allowed, "roc_auc", fairness=[nothing], latency_ms_per_1k_rows=1, model_bytes=1)
    (result,) = [r for r in report.results if r.gate == "fairness"]
    assert report.passed and result.passed and not result.evaluated and result.status == "not evaluated"
    assert report.message().startswith(f"{len(report.results) - 1} gates passed, 1 not evaluated (allowed):")
    assert "allowed by gates.allow_not_evaluated" in report.message()
    assert GateResult(**json.loads(json.dumps(result.to_dict()))) == result  # survives fairness.json


def test_robustness_that_moved_columns_is_evaluated_as_before():
    report = evaluate_gates(GOOD, params(max_flip_rate=0.1), "roc_auc", flip_rate=0.2, perturbed=("tenure",))
    (flip,) = [r for r in report.results if r.gate == "robustness"]
    assert flip.evaluated and not flip.passed and flip.status == "failed"
