"""One batch's check on tiny inline data: the summary, the signals and history row read from it, its markdown, and
a batch failing validation recorded as invalid without being used."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from optiflow.config import load_config
from optiflow.errors import ValidationFailed
from optiflow.monitoring.batches import HISTORY_COLUMNS, history_row, read_history
from optiflow.monitoring.check import BatchSummary, batch_markdown, check_batch, signals
from optiflow.monitoring.drift import DriftResult, Quality
from optiflow.monitoring.quarantine import quarantined
from tests.conftest import make_project

AT = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
LABELLED = Quality(roc_auc=0.70, f1=0.50, champion_roc_auc=0.80, champion_f1=0.55)


def _summary(quality: Quality | None = LABELLED, drifted: tuple[str, ...] = ("tenure",)):
    drift = DriftResult(
        rows=500,
        rows_checked=300,
        column_scores={"tenure": 0.2, "contract": 0.01},
        drifted_columns=drifted,
        drift_share=len(drifted) / 2,
        prediction_drift=0.12,
        prediction_drifted=True,
        quality=quality,
    )
    return BatchSummary("b7", "data/batches/b7.csv", 500, "3", "reports/monitoring/b7/drift.html", drift).to_dict()


def test_the_summary_carries_the_figures_the_decision_reads() -> None:
    summary = _summary()
    assert summary["batch_id"] == "b7" and summary["rows"] == 500 and summary["rows_checked"] == 300
    assert summary["drifted_columns"] == ["tenure"] and summary["quality_drop"] == pytest.approx(0.10)
    read = signals(summary)
    assert read.drift_share == 0.5 and read.drifted_columns == ("tenure",) and read.labelled_rows == 500
    assert read.prediction_drifted and read.quality_drop == pytest.approx(0.10)
    assert signals(_summary(quality=None)).quality_drop is None


def test_history_row_of_a_checked_batch() -> None:
    row = history_row(_summary(), "promoted", "drift share 0.500 >= 0.3", "4", AT)
    assert set(row) == set(HISTORY_COLUMNS)
    assert row["at"] == "2026-01-02T03:04:05+00:00" and row["champion_version"] == "3" and row["new_version"] == "4"
    assert (row["roc_auc"], row["f1"]) == (0.70, 0.50) and row["quality_drop"] == pytest.approx(0.10)
    assert row["rows"] == 500 and row["rows_checked"] == 300 and row["labelled_rows"] == 500
    assert history_row(_summary(drifted=("tenure", "contract")), "ignored", "", None, AT)["drifted_columns"] == (
        "tenure;contract"
    )


def test_history_row_of_an_invalid_batch_has_no_figures() -> None:
    invalid = {"batch_id": "cents", "source": "cents.csv", "rows": 40, "labelled_rows": 0}
    row = history_row(invalid, "invalid", "cents.csv: 1 of 90 expectations failed (40 rows):", None, AT)
    assert row["decision"] == "invalid" and row["rows"] == 40 and row["labelled_rows"] == 0
    assert row["drifted_columns"] == "" and row["new_version"] is None
    for figure in ("rows_checked", "drift_share", "prediction_drift", "roc_auc", "f1", "quality_drop"):
        assert row[figure] is None, figure
    assert row["champion_version"] is None


def test_batch_markdown_shows_the_verdict_the_figures_and_the_report() -> None:
    text = batch_markdown(_summary(), "retrained", "drift share 0.500 >= 0.3")
    assert text.startswith("# Batch `b7`: **retrained**\n\ndrift share 0.500 >= 0.3\n")
    for row in (
        "| rows (checked) | 500 (300) |",
        "| share of drifted columns | 0.500 |",
        "| drifted columns | tenure |",
        "| prediction drift | 0.120 |",
        "| ROC AUC on the batch | 0.700 |",
        "| champion's test ROC AUC | 0.800 |",
        "| champion | v3 |",
    ):
        assert row in text, row
    assert f"[drift.html]({Path('reports/monitoring/b7/drift.html').resolve().as_uri()})" in text
    unlabelled = batch_markdown(_summary(quality=None, drifted=()), "ignored", "no drift")
    assert "| drifted columns | none |" in unlabelled and "| ROC AUC on the batch | n/a |" in unlabelled


def test_a_batch_failing_validation_is_recorded_invalid_and_never_used(
    tmp_path: Path, churn_sample: pd.DataFrame
) -> None:
    config = load_config(make_project(tmp_path))
    batch = churn_sample.head(40).assign(monthly_charges=lambda frame: frame["monthly_charges"] * 100)
    batch.to_csv(tmp_path / "cents.csv", index=False)
    with pytest.raises(ValidationFailed, match="monthly_charges") as failure:
        check_batch(config, tmp_path / "cents.csv")  # no champion is needed: the batch is never scored
    assert "no retraining, the champion is unchanged" in str(failure.value)
    assert "it waits in quarantine (cents.parquet" in str(failure.value)
    (held,) = quarantined(config)
    assert held.batch_id == "cents" and held.rows == 40 and "monthly_charges" in " ".join(held.reasons)
    folder = config.path("monitoring") / "cents"
    assert sorted(p.name for p in folder.iterdir()) == ["validation.html", "validation.json"]
    (row,) = read_history(config.path("monitoring_history")).to_dict("records")
    assert row["decision"] == "invalid" and row["rows"] == 40 and "expectations failed" in row["reason"]
    assert not config.path("monitored").exists()
