"""Promotion gates: built cases that pass, fail, and list every failure with observed vs threshold."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from optiflow.assess.gates import (
    ChampionEvidence,
    GateReport,
    GateResult,
    at_least,
    at_most,
    champion_gates,
    comparison_gate,
    evaluate_gates,
)
from optiflow.assess.paired import PairedComparison
from optiflow.config import ChampionGateParams, GateParams

GOOD = {"roc_auc": 0.85, "pr_auc": 0.65, "f1": 0.60, "accuracy": 0.80, "neg_log_loss": -0.42, "neg_brier": -0.14}


def compared(low: float, high: float | None = None, rows: int = 1400) -> PairedComparison:
    """A paired comparison whose interval is [low, high] (estimate in the middle)."""
    high = low + 0.02 if high is None else high
    estimate = (low + high) / 2
    return PairedComparison("delong", rows, 380, 0.84, 0.84 + estimate, estimate, low, high, 0.95, 0.5)


def evidence(low: float, challenger: dict | None = None) -> ChampionEvidence:
    return ChampionEvidence(compared(low), challenger or GOOD, GOOD)


def params(**overrides) -> GateParams:
    base = {
        "min_quality": {"roc_auc": 0.80, "f1": 0.50},
        "max_latency_ms_per_1k_rows": 50.0,
        "max_model_bytes": 1_000_000,
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
        champion=evidence(low=0.004),
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
        champion=evidence(low=-0.03, challenger=challenger),
    )
    assert not report.passed
    failed = {(result.gate, result.metric) for result in report.failures}
    assert failed == {
        ("quality", "roc_auc"),
        ("quality", "f1"),
        ("fairness", "demographic_parity_difference[senior_citizen]"),
        ("budget", "latency_ms_per_1k_rows"),
        ("budget", "model_bytes"),
        ("champion", "roc_auc_difference_lower_bound"),
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
        "champion roc_auc_difference_lower_bound: observed -0.03 vs threshold > 0",
        "95% CI [-0.0300, -0.0100] (DeLong, 1400 rows, 380 positive), on holdout rows neither model trained on",
        "champion neg_brier: observed -0.2 vs threshold >= -0.15 (champion - tolerance 0.01, both on the same 1400",
    ):
        assert expected in message


def test_superiority_needs_the_whole_interval_above_zero():
    settings = ChampionGateParams(superiority=True, margin=0.01)
    assert comparison_gate(compared(low=0.001), settings).passed
    tie = comparison_gate(compared(low=0.0, high=0.0), settings)  # identical models: no evidence of improvement
    assert not tie.passed and tie.comparison == ">" and tie.threshold == 0.0
    assert not comparison_gate(compared(low=-0.002), settings).passed


def test_non_inferiority_passes_a_challenger_not_worse_than_the_margin():
    settings = ChampionGateParams(superiority=False, margin=0.01)
    assert comparison_gate(compared(low=0.0, high=0.0), settings).passed  # a tie is not worse
    assert comparison_gate(compared(low=-0.0099), settings).passed
    worse = comparison_gate(compared(low=-0.012), settings)
    assert not worse.passed and worse.threshold == -0.01 and worse.comparison == ">="
    assert "non-inferiority" in worse.detail and "margin 0.01" in worse.detail


def test_the_gate_message_shows_estimate_interval_rows_and_method():
    result = comparison_gate(compared(low=-0.005, high=0.013), ChampionGateParams())
    text = result.describe()
    for part in ("+0.0040", "95% CI [-0.0050, +0.0130]", "1400 rows", "DeLong", "superiority"):
        assert part in text, part


def test_guard_metric_may_drop_within_its_tolerance_only():
    settings = ChampionGateParams()
    within = champion_gates(evidence(0.01, {**GOOD, "neg_brier": -0.145}), settings, {"neg_brier": 0.01})
    beyond = champion_gates(evidence(0.01, {**GOOD, "neg_brier": -0.16}), settings, {"neg_brier": 0.01})
    assert all(result.passed for result in within)
    assert [result.metric for result in beyond if not result.passed] == ["neg_brier"]


def test_no_champion_adds_no_champion_gate():
    """The first release: nothing to compare with, so no champion gate claims to have passed."""
    report = evaluate_gates(GOOD, params(), "roc_auc", latency_ms_per_1k_rows=1.0, model_bytes=1)
    assert not [result for result in report.results if result.gate == "champion"] and report.passed


def test_champion_without_the_metric_fails_instead_of_passing_silently():
    results = champion_gates(
        ChampionEvidence(compared(0.01), GOOD, {"pr_auc": 0.6}), ChampionGateParams(), {"neg_brier": 0.01}
    )
    assert not results[1].passed and results[1].detail == "champion has no neg_brier"


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
        params().max_model_bytes = 1  # frozen
    with pytest.raises(ValidationError, match=r"min_delta was replaced by the paired test gates\.champion"):
        GateParams(min_delta=0.001)


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
