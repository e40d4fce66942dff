"""Model card and run report rendering from stage outputs: every section, figures inlined, failures shown."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from optiflow.gates import GateReport, GateResult
from optiflow.report import SECTIONS, RunFacts, card_html, model_card, run_report

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
    assert "**rejected** (compared with champion v3)" in card and "none yet" in card
    assert "observed 0.35 vs threshold <= 0.3" in card and "`tenure`" in card
    assert "<table>" in card_html(card, "churn v4")


def test_run_report_is_one_self_contained_page(tmp_path: Path) -> None:
    page = run_report(_facts(tmp_path, passed=True))
    for section in SECTIONS:
        assert f">{section}</h2>" in page
    assert page.count("data:image/png;base64,") == 1  # the missing figure is left out, not a broken link
    assert "promoted" in page and "src='http" not in page and "no data.sensitive_features declared" in page
