"""Model card and run report rendering from stage outputs: every section, figures inlined, failures shown."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from optiflow.assess.gates import GateReport, GateResult
from optiflow.release.report import SECTIONS, RunFacts, card_html, decision_rows, model_card, run_report

LINEAGE = {
    "data.source": "data/input.csv",
    "data.sha256": "ab" * 32,
    "data.train.md5": "1" * 32,
    "data.valid.md5": "2" * 32,
    "data.test.md5": "3" * 32,
    "git.commit": "c" * 40,
    "git.dirty": "false",
    "params.sha256": "d" * 64,
}
METRICS = {"roc_auc": 0.84, "pr_auc": 0.63, "f1": 0.6, "accuracy": 0.8, "neg_log_loss": -0.42, "neg_brier": -0.14}


def _facts(tmp_path: Path, passed: bool) -> RunFacts:
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [0, 1])
    figure.savefig(tmp_path / "roc.png", format="png")
    gates = GateReport(
        (
            GateResult("quality", "roc_auc", 0.84, 0.8, ">=", True),
            GateResult("fairness", "equalized_odds_difference[senior_citizen]", 0.35, 0.3, "<=", passed),
        )
    )
    candidate = {**METRICS, "ece": 0.03, "threshold": 0.31}
    return RunFacts(
        model_name="churn",
        version="4",
        run_id="r1",
        target="churn",
        validation={"source": "data/input.csv", "rows": 1500, "evaluated": 64, "failed": 0, "success": True},
        metrics={
            "primary_metric": "roc_auc",
            "selected": "lr",
            "threshold": 0.31,
            "threshold_policy": "max_f1",
            "test_rows": 300,
            "test": candidate,
            "candidates": {"lr": candidate},
        },
        slices=pd.DataFrame(
            [{"slice": "contract", "value": "contract=One year", "count": 60, "roc_auc": 0.8, "family": "lr"}]
        ),
        fairness={"sensitive_features": [], "note": "no data.sensitive_features declared; nothing to check"},
        explain={
            "explainer": "linear",
            "output_space": "log_odds",
            "rows_explained": 200,
            "top_columns": [{"column": "tenure", "mean_abs_shap": 0.5, "rank": 1}],
            "disagreements": [],
        },
        gates=gates.to_dict(),
        champion_version="3",
        lineage=LINEAGE,
        images={"Metrics": {"roc": tmp_path / "roc.png", "missing": tmp_path / "none.png"}},
    )


def test_model_card_has_every_section_and_the_gate_failures(tmp_path: Path) -> None:
    card = model_card(_facts(tmp_path, passed=False))
    for heading in (
        "Intended use",
        "Data",
        "Metrics",
        "Slices",
        "Fairness",
        "Top features",
        "Compression",
        "Limitations",
        "Gate decisions",
    ):
        assert f"## {heading}" in card
    assert "**rejected** (compared with champion v3)" in card and "No compression report." in card
    assert "observed 0.35 vs threshold <= 0.3" in card and "`tenure`" in card
    assert "<table>" in card_html(card, "churn v4")


def test_run_report_is_one_self_contained_page(tmp_path: Path) -> None:
    page = run_report(_facts(tmp_path, passed=True))
    for section in SECTIONS:
        assert f">{section}</h2>" in page
    assert page.count("data:image/png;base64,") == 1  # the missing figure is left out, not a broken link
    assert "promoted" in page and "src='http" not in page and "no data.sensitive_features declared" in page


def test_compression_section_lists_every_variant_with_its_verdict(tmp_path: Path) -> None:
    def variant(auc: float, size: int) -> dict:
        return {
            "bytes": size,
            "params": 100,
            "nonzero_params": 90,
            "latency_ms": {"1": {"p50": 0.1}, "4096": {"p50": 2.0}},
            "test": {"roc_auc": auc, "flips": 3},
        }

    compression = {
        "chosen": "int8",
        "message": "int8 chosen: lowest artifact bytes",
        "variants": {"fp32": variant(0.84, 900), "int8": variant(0.839, 300), "magnitude80": variant(0.8, 900)},
        "judgements": {
            "int8": {"passed": True, "reasons": []},
            "magnitude80": {"passed": False, "reasons": ["ROC AUC drop 0.0400 > 0.0050"]},
        },
    }
    facts = _facts(tmp_path, passed=True)
    facts = RunFacts(**{**facts.__dict__, "compression": compression})
    card = model_card(facts)
    assert "int8 chosen: lowest artifact bytes" in card and "p50 ms (batch 4096)" in card
    assert "| int8 | 300 |" in card and "chosen" in card and "ROC AUC drop 0.0400 > 0.0050" in card
    assert "| fp32 | 900 |" in card and "baseline" in card
    assert ">Compression</h2>" in run_report(facts) and "magnitude80" in run_report(facts)


def test_every_decision_names_the_data_it_used(tmp_path: Path) -> None:
    facts = _facts(tmp_path, passed=True)
    decisions = {
        "model": {"choice": "lr", "data": "valid", "rows": 300, "evidence": "highest validation roc_auc"},
        "calibration": {"choice": "sigmoid", "data": "valid", "rows": 300, "evidence": "lowest out-of-fold Brier"},
        "threshold": {"choice": 0.31, "data": "valid", "rows": 300, "evidence": "policy max_f1"},
        "test metrics": {"choice": "none (reported and gated only)", "data": "test", "rows": 300, "evidence": "once"},
    }
    fairness = {**facts.fairness, "mitigation_decided_on": {"data": "valid", "rows": 300, "gates": "all 3 passed"}}
    facts = RunFacts(
        **{
            **facts.__dict__,
            "metrics": {**facts.metrics, "decisions": decisions, "valid_rows": 300},
            "compression": {"chosen": "int8", "message": "int8 chosen on the valid split"},
            "fairness": fairness,
            "comparison": "vs champion v3: ROC AUC challenger 0.8500 - champion 0.8400 = +0.0100",
        }
    )
    rows = {row["decision"]: row for row in decision_rows(facts)}
    assert list(rows) == [
        "hyperparameters",
        "model",
        "compressed variant",
        "calibration",
        "threshold",
        "fairness mitigation",
        "test metrics",
        "promotion",
    ]
    assert {name: row["data"] for name, row in rows.items()} == {
        "hyperparameters": "train",
        "model": "valid",
        "compressed variant": "valid",
        "calibration": "valid",
        "threshold": "valid",
        "fairness mitigation": "valid",
        "test metrics": "test",
        "promotion": "holdout",
    }
    assert rows["promotion"]["evidence"].startswith("vs champion v3")
    card, page = model_card(facts), run_report(facts)
    assert "## Decisions" in card and "| fairness mitigation | none | valid | 300 |" in card
    assert ">Decisions</h2>" in page and "Champion comparison: vs champion v3" in page
