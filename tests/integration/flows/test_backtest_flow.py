"""The backtest flow on a short stream: every policy meets the same batches through the monitoring and training core,
the table and the HTML page are written, a concept change is diagnosed once labels arrive, and the models trained
on one training set are reused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flows.backtest import backtest

pytestmark = pytest.mark.usefixtures("prefect_api")  # the flow runs on a temporary Prefect API

ROOT = Path(__file__).resolve().parents[3]


def test_a_short_backtest_writes_its_table_and_page(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    stream = "\nbacktest: {batches: 8, batch_rows: 600, label_delay: 1, shift_at: 3, every_k: 5}\n"
    params.write_text((ROOT / "params.yaml").read_text() + stream)  # the settings; the flow's parameters override
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/wa_churn.csv.gz").symlink_to(ROOT / "data/raw/wa_churn.csv.gz")
    result = backtest(str(params), every_k=3, scenarios=["control", "concept"], policies=["never", "every_k", "oracle"])
    table = pd.DataFrame(result["table"])
    assert len(table) == 6 and set(table["policy"]) == {"never", "every_k", "oracle"}
    control = table[table["scenario"] == "control"].set_index("policy")
    assert control.loc["never", "retrains"] == 0 and control.loc["every_k", "retrains"] == 2
    concept = table[table["scenario"] == "concept"].set_index("policy")
    assert concept.loc["never", "mean_roc_auc"] < control.loc["never", "mean_roc_auc"] - 0.05
    timeline = pd.read_csv(tmp_path / "reports/backtest/timeline.csv")
    never = timeline[(timeline["policy"] == "never") & (timeline["scenario"] == "concept") & timeline["changed"]]
    assert (never["shift"] == "concept").mean() >= 0.8
    # the first batches are the same draws in both scenarios, so every_k's first retrain is one model, trained once
    first = timeline[(timeline["policy"] == "every_k") & (timeline["t"] == 4)]
    assert first["model"].nunique() == 1
    page = (tmp_path / "reports/backtest/backtest.html").read_text()
    assert page.count("<img") == 2 and "mean_roc_auc" in page
