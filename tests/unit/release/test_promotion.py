"""Promotion decisions on tiny inline data: the champion re-score, the gate decision, lineage and the decision text."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optiflow.assess.gates import GateReport, GateResult
from optiflow.assess.robustness import RobustnessReport
from optiflow.config import REPORT_KEYS, DataParams, GateParams, load_config, parse_params
from optiflow.data.keys import KEY_COLUMN
from optiflow.errors import IntegrityError, ServiceUnavailable
from optiflow.release import promotion
from optiflow.release.promotion import (
    ChampionComparison,
    ChampionRead,
    Evidence,
    compare_with_champion,
    decide,
    decision_markdown,
    headline_metrics,
    in_headline_order,
    lineage,
    read_champion,
)
from optiflow.release.registry import PromotionDecision, Registration
from tests.conftest import make_project, shipped_params

CHALLENGER = {"roc_auc": 0.85, "pr_auc": 0.65, "f1": 0.60, "accuracy": 0.80, "neg_log_loss": -0.42, "neg_brier": -0.14}
GATES = GateParams(min_quality={"roc_auc": 0.8}, guard_tolerances={"neg_brier": 0.01})
EVIDENCE = Evidence(12.5, 2048, RobustnessReport(100, 0.85, 0.01, 0.84, 0.03, 0.82))
PASSING_FAIRNESS = {"gates": [GateResult("fairness", "selection_rate_ratio", 0.9, 0.8, ">=", True).to_dict()]}
PARAMS = parse_params(shipped_params())
DATA = DataParams(source="x.csv", target="churn", positive_label="Yes", negative_label="No")


def _decide(champion: ChampionComparison, fairness: dict = PASSING_FAIRNESS) -> GateReport:
    return decide(CHALLENGER, fairness, EVIDENCE, champion, GATES, "roc_auc")


def test_the_evidence_is_logged_under_grouped_names() -> None:
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
    report = decide(CHALLENGER, fairness, EVIDENCE, ChampionComparison(), GATES, "roc_auc")
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


class _Scores:
    """A model whose scores are a column of the frame; it remembers the keys of every row it scored."""

    def __init__(self, column: str) -> None:
        self.column, self.scored = column, set()

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        self.scored |= set(frame[KEY_COLUMN])
        return np.column_stack([1 - frame[self.column], frame[self.column]])


def _holdout(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.uniform(size=rows) < 0.3
    return pd.DataFrame(
        {
            KEY_COLUMN: [f"k{i}" for i in range(rows)],
            "churn": np.where(y, "Yes", "No"),
            "old": np.clip(0.3 + 0.3 * y + rng.normal(0, 0.2, rows), 0, 1),
            "new": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, rows), 0, 1),
        }
    )


def test_the_champion_is_scored_only_on_holdout_rows_it_never_learnt_from() -> None:
    holdout = _holdout()
    old, new = _Scores("old"), _Scores("new")
    seen = frozenset(f"k{i}" for i in range(0, 400, 4))  # a quarter of the holdout trained an earlier champion
    compared = compare_with_champion(ChampionRead("3", old, 0.5, seen), new, 0.5, holdout, frozenset({"t1"}), PARAMS)
    assert old.scored == new.scored == set(holdout[KEY_COLUMN]) - seen
    comparison = compared.evidence.comparison
    assert comparison.rows == 300 and comparison.estimate > 0 and not compared.failures
    assert (
        "vs champion v3" in compared.note and "100 holdout rows the champion learnt from were left out" in compared.note
    )
    assert set(compared.evidence.champion) == set(CHALLENGER)  # the guards compare on the same rows
    report = _decide(compared)
    gate = next(r for r in report.results if r.gate == "champion" and r.metric.startswith("roc_auc"))
    assert "300 rows" in gate.detail and "DeLong" in gate.detail and "CI [" in gate.detail


def test_no_champion_is_the_first_release_said_so() -> None:
    compared = compare_with_champion(ChampionRead(None), _Scores("new"), 0.5, _holdout(), frozenset(), PARAMS)
    assert compared == ChampionComparison(note="first release: no version held the alias 'champion'")
    assert _decide(compared).passed


def test_a_comparison_that_cannot_be_made_fails_and_never_passes() -> None:
    holdout = _holdout()
    all_seen = ChampionRead("2", _Scores("old"), 0.5, frozenset(holdout[KEY_COLUMN]))
    compared = compare_with_champion(all_seen, _Scores("new"), 0.5, holdout, frozenset(), PARAMS)
    assert compared.evidence is None and "not evaluated: 0 holdout rows champion v2 never learnt from" in compared.note

    class Broken:
        def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
            raise KeyError("column 'tenure' missing")

    cannot = compare_with_champion(ChampionRead("2", Broken()), _Scores("new"), 0.5, holdout, frozenset(), PARAMS)
    report = _decide(cannot)
    assert not report.passed and "champion v2 cannot score the holdout" in report.message()
    with pytest.raises(IntegrityError, match="holdout row"):
        compare_with_champion(all_seen, _Scores("new"), 0.5, holdout, frozenset({"k1"}), PARAMS)


def test_an_equal_challenger_is_not_promoted_and_a_better_one_is() -> None:
    holdout = _holdout(1500, seed=1)
    equal = compare_with_champion(
        ChampionRead("1", _Scores("old"), 0.5), _Scores("old"), 0.5, holdout, frozenset(), PARAMS
    )
    assert [(r.gate, r.metric) for r in _decide(equal).failures] == [("champion", "roc_auc_difference_lower_bound")]
    better = compare_with_champion(
        ChampionRead("1", _Scores("old"), 0.5), _Scores("new"), 0.5, holdout, frozenset(), PARAMS
    )
    assert _decide(better).passed


def test_any_error_reading_the_champion_stops_the_release(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    class Registry:
        aliases: dict | Exception = {}  # noqa: RUF012 (one instance, set by the test)

        def get_registered_model(self, name: str):
            if isinstance(self.aliases, Exception):
                raise self.aliases
            return self

    registry = Registry()
    monkeypatch.setattr(mlflow, "MlflowClient", lambda: registry)
    registry.aliases = {}
    assert read_champion("churn", "champion").version is None  # no champion yet: the first release
    registry.aliases = MlflowException("database is locked")
    with pytest.raises(ServiceUnavailable, match=r"cannot read the 'champion' alias.*nothing was registered"):
        read_champion("churn", "champion")
    registry.aliases = {"champion": "4"}

    def corrupt(name: str, version: str):
        raise IntegrityError("model.skops: sha256 mismatch")

    monkeypatch.setattr(promotion, "load_registered", corrupt)
    with pytest.raises(IntegrityError, match="champion churn v4 could not be read, so the release stopped"):
        read_champion("churn", "champion")

    class Loaded:
        model, run_id, spec = object(), "run-4", type("Spec", (), {"threshold": 0.3})

    def no_keys(run_id: str):
        raise OSError("no such artifact")

    monkeypatch.setattr(promotion, "load_registered", lambda name, version: Loaded())
    monkeypatch.setattr(promotion, "seen_keys", no_keys)
    with pytest.raises(IntegrityError, match="no record of the rows it learnt from"):
        read_champion("churn", "champion")
    monkeypatch.setattr(promotion, "seen_keys", lambda run_id: frozenset({"a"}))
    read = read_champion("churn", "champion")
    assert read.version == "4" and read.threshold == 0.3 and read.seen == frozenset({"a"})


def test_lineage_ties_the_version_to_data_splits_params_code_and_reports(tmp_path: Path) -> None:
    config = load_config(make_project(tmp_path))
    config.source.write_bytes(b"tenure,churn\n1,Yes\n")
    for number, split in enumerate(("train", "valid", "test", "holdout")):
        config.path(split).parent.mkdir(parents=True, exist_ok=True)
        config.path(split).write_bytes(bytes([number]))
    validation = {"rows": 1, "success": True, "evaluated": 7}
    meta = {"family": "mlp", "candidate": "mlp_int8", "calibration": {"method": "isotonic"}, "device": "cuda"}
    tags = lineage(config, validation, meta, 0.123456789, "flow-run-1")
    assert tags["model.candidate"] == "mlp_int8" and tags["model.calibration"] == "isotonic"
    assert tags["train.device"] == "cuda" and tags["data.holdout.md5"] == hashlib.md5(bytes([3])).hexdigest()
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
