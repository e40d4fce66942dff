"""Promotion decisions on tiny inline data: the champion re-score, the gate decision, lineage and the decision text."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optiflow.assess.gates import GateReport, GateResult
from optiflow.assess.robustness import RobustnessReport
from optiflow.config import REPORT_KEYS, DataParams, EvaluateParams, GateParams, load_config
from optiflow.release.promotion import (
    ChampionScore,
    Evidence,
    decide,
    decision_markdown,
    headline_metrics,
    in_headline_order,
    lineage,
    rescorer,
    score_champion,
)
from optiflow.release.registry import PromotionDecision, Registration
from tests.conftest import make_project

CHALLENGER = {"roc_auc": 0.85, "pr_auc": 0.65, "f1": 0.60, "accuracy": 0.80, "neg_log_loss": -0.42, "neg_brier": -0.14}
GATES = GateParams(min_quality={"roc_auc": 0.8}, min_delta=0.001, guard_tolerances={"neg_brier": 0.01})
EVIDENCE = Evidence(12.5, 2048, RobustnessReport(100, 0.85, 0.01, 0.84, 0.03, 0.82))
PASSING_FAIRNESS = {"gates": [GateResult("fairness", "selection_rate_ratio", 0.9, 0.8, ">=", True).to_dict()]}


def _decide(champion: ChampionScore, fairness: dict = PASSING_FAIRNESS) -> GateReport:
    return decide(CHALLENGER, fairness, EVIDENCE, champion, GATES, "roc_auc")


def test_a_champion_that_cannot_score_todays_rows_fails_the_champion_gate() -> None:
    def rescore(version: str) -> dict[str, float]:
        raise KeyError("column 'tenure' missing")

    champion = score_champion("3", rescore)
    assert champion.version == "3" and champion.metrics == {}
    report = _decide(champion)
    assert not report.passed
    failed = {(r.gate, r.metric) for r in report.failures}
    assert failed == {("champion", "rescore"), ("champion", "roc_auc"), ("champion", "neg_brier")}
    assert "champion v3 cannot score the current test split" in report.message()


def test_no_champion_passes_and_a_rescored_champion_is_compared_on_the_same_metrics() -> None:
    assert score_champion(None, lambda version: pytest.fail("nothing to re-score")) == ChampionScore(None, None)
    assert _decide(score_champion(None, dict)).passed
    weaker = score_champion("1", lambda version: {**CHALLENGER, "roc_auc": 0.80})
    assert _decide(weaker).passed
    equal = score_champion("1", lambda version: dict(CHALLENGER))  # a tie misses min_delta
    assert [(r.gate, r.metric) for r in _decide(equal).failures] == [("champion", "roc_auc")]


def test_the_fairness_stage_gates_and_the_evidence_are_judged() -> None:
    unfair = {"gates": [GateResult("fairness", "tpr_difference", 0.3, 0.1, "<=", False).to_dict()]}
    assert [r.metric for r in _decide(score_champion(None, dict), unfair).failures] == ["tpr_difference"]
    slow = GateParams(max_latency_ms_per_1k_rows=10.0, max_model_bytes=1000, max_flip_rate=0.01, max_auc_drop=0.05)
    report = decide(CHALLENGER, PASSING_FAIRNESS, EVIDENCE, ChampionScore(None, None), slow, "roc_auc")
    assert {r.metric for r in report.failures} == {"latency_ms_per_1k_rows", "model_bytes", "flip_rate"}
    assert EVIDENCE.metrics() == {
        "model/latency_ms_per_1k_rows": 12.5,
        "model/bytes": 2048,
        **{f"robustness/{key}": value for key, value in EVIDENCE.robustness.to_dict().items()},
    }


def test_the_headline_holds_the_test_metrics_the_gate_counts_latency_and_size_only() -> None:
    fairness = {
        "gates": [
            GateResult("fairness", "tpr_difference", 0.3, 0.1, "<=", False).to_dict(),
            GateResult("fairness", "fpr_difference", None, 0.1, "<=", True, "too small", evaluated=False).to_dict(),
        ]
    }
    report = decide(CHALLENGER, fairness, EVIDENCE, ChampionScore(None, None), GATES, "roc_auc")
    headline = headline_metrics(CHALLENGER, EVIDENCE, report, promoted=False)
    assert headline == {
        **{f"test/{key}": value for key, value in CHALLENGER.items()},
        "gates/passed": len(report.results) - 2,
        "gates/failed": 2,  # the unchecked gate is not allowed by GATES (gates.allow_not_evaluated): it fails
        "gates/not_evaluated": 1,
        "gates/promoted": 0,
        "model/latency_ms_per_1k_rows": 12.5,
        "model/bytes": 2048,
    }
    assert len(headline) <= 20 and not any(key.startswith("robustness/") for key in headline)
    assert list(headline)[:4] == ["test/roc_auc", "test/pr_auc", "test/f1", "gates/promoted"]  # DVC's column order
    assert list(in_headline_order({"robustness/flip_rate": 0.1, **headline})) == list(headline)


class _Fixed:
    """A model whose scores are the frame's `score` column."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.column_stack([1 - frame["score"], frame["score"]])


def test_rescorer_picks_the_threshold_on_valid_and_scores_test() -> None:
    valid = pd.DataFrame({"score": [0.1, 0.2, 0.6, 0.7], "churn": ["No", "No", "Yes", "Yes"]})
    test = pd.DataFrame({"score": [0.3, 0.65, 0.1, 0.9], "churn": ["No", "Yes", "No", "No"]})
    data = DataParams(source="x.csv", target="churn", positive_label="Yes", negative_label="No")
    metrics = rescorer(valid, test, data, EvaluateParams(threshold_policy="max_f1"))(_Fixed())
    # max F1 on valid separates at 0.6: on test only 0.65 (a churner) and 0.9 (not) are positive
    assert metrics["accuracy"] == pytest.approx(0.75) and metrics["f1"] == pytest.approx(2 / 3)


def test_lineage_ties_the_version_to_data_splits_params_code_and_reports(tmp_path: Path) -> None:
    config = load_config(make_project(tmp_path))
    config.source.write_bytes(b"tenure,churn\n1,Yes\n")
    for number, split in enumerate(("train", "valid", "test")):
        config.path(split).parent.mkdir(parents=True, exist_ok=True)
        config.path(split).write_bytes(bytes([number]))
    validation = {"rows": 1, "success": True, "evaluated": 7}
    tags = lineage(config, validation, "mlp", 0.123456789, "flow-run-1")
    assert tags["data.sha256"] == hashlib.sha256(b"tenure,churn\n1,Yes\n").hexdigest()
    assert tags["data.test.md5"] == hashlib.md5(bytes([2])).hexdigest() and tags["data.rows"] == "1"
    assert tags["validation.success"] == "true" and tags["validation.expectations"] == "7"
    assert tags["model.family"] == "mlp" and tags["model.threshold"] == "0.123457"
    assert tags["prefect.flow_run_id"] == "flow-run-1" and len(tags["params.sha256"]) == 64
    assert {key for key in tags if key.startswith("artifacts.")} == {f"artifacts.{key}" for key in REPORT_KEYS}
    assert tags["artifacts.run_report"] == "reports/run_report.html"
    assert tags["git.commit"] == "unknown" and tags["git.dirty"] == "unknown"  # tmp_path is no git checkout
    assert all(isinstance(value, str) for value in tags.values())  # MLflow tags are strings


def _registration(decision: PromotionDecision) -> Registration:
    return Registration("churn", "4", "run-id", "champion", decision, "sqlite:///mlflow.db", "reports/run_report.html")


def test_decision_markdown_names_the_verdict_and_every_gate() -> None:
    report = GateReport(
        (
            GateResult("quality", "roc_auc", 0.85, 0.8, ">=", True),
            GateResult("champion", "rescore", None, None, ">=", False, "cannot score"),
        )
    )
    rejected = decision_markdown(
        _registration(PromotionDecision(False, report.message(), report.to_dict(), "2")), Path("reports/r.html")
    )
    assert "v4 registered but **rejected**; `champion` stays on v2" in rejected
    assert "| quality | roc_auc | 0.85 | >= 0.8 | yes |" in rejected
    assert "| champion | rescore | n/a | - | NO |" in rejected
    assert "Run report: `reports/r.html`" in rejected and "Tracking: `sqlite:///mlflow.db`" in rejected
    promoted = decision_markdown(
        _registration(PromotionDecision(True, "all 1 gates passed", report.to_dict(), "2", "2")), Path("r.html")
    )
    assert "**v4 promoted to `champion`**; v2 is now `previous`" in promoted
    first = decision_markdown(_registration(PromotionDecision(True, "ok", report.to_dict())), Path("r.html"))
    assert "**v4 promoted to `champion`**\n" in first
