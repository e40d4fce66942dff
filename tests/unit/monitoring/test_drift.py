"""Evidently drift on tiny frames: undrifted, a shifted column, prediction drift, sampling, quality, saved reports."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optiflow.config import MonitorParams
from optiflow.data.sampling import sample_rows
from optiflow.data.schema import Schema
from optiflow.monitoring.drift import batch_quality, check_drift, save_snapshot

SCHEMA = Schema(numeric=("charges", "tenure"), categorical=("contract", "flag"))
PARAMS = MonitorParams()


def frame(rows: int, seed: int, charges_shift: float = 0.0, monthly_share: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "charges": rng.normal(60, 20, rows) * (1 + charges_shift),
            "tenure": rng.integers(0, 72, rows).astype(float),
            "contract": np.where(rng.random(rows) < monthly_share, "monthly", "yearly"),
            "flag": rng.integers(0, 2, rows),
        }
    )


def test_same_distribution_is_not_drifted() -> None:
    result, _ = check_drift(frame(1000, 1), frame(1000, 2), SCHEMA, PARAMS)
    assert result.drift_share == 0.0 and result.drifted_columns == ()
    assert set(result.column_scores) == {"charges", "tenure", "contract", "flag"}
    assert result.prediction_drift is None and result.quality is None


def test_shifted_columns_are_named_and_counted() -> None:
    result, _ = check_drift(frame(1000, 1), frame(1000, 2, charges_shift=0.3, monthly_share=0.95), SCHEMA, PARAMS)
    assert result.drifted_columns == ("charges", "contract")
    assert result.drift_share == 0.5
    assert result.column_scores["charges"] > PARAMS.num_threshold > result.column_scores["tenure"]


def test_tiny_frames_still_give_a_verdict() -> None:
    result, _ = check_drift(frame(30, 1), frame(12, 2, charges_shift=2.0), SCHEMA, PARAMS)
    assert "charges" in result.drifted_columns and result.rows == result.rows_checked == 12


def test_prediction_drift_compares_the_champion_scores() -> None:
    rng = np.random.default_rng(5)
    reference_scores = rng.beta(2, 5, 1000)
    same, _ = check_drift(
        frame(1000, 1),
        frame(1000, 2),
        SCHEMA,
        PARAMS,
        reference_scores=reference_scores,
        current_scores=rng.beta(2, 5, 1000),
    )
    shifted, _ = check_drift(
        frame(1000, 1),
        frame(1000, 2),
        SCHEMA,
        PARAMS,
        reference_scores=reference_scores,
        current_scores=rng.beta(5, 2, 1000),
    )
    assert not same.prediction_drifted and same.prediction_drift < PARAMS.prediction_threshold
    assert shifted.prediction_drifted and shifted.prediction_drift > PARAMS.prediction_threshold
    assert shifted.drift_share == 0.0  # the score is not one of the feature columns


def test_sampling_a_big_batch_gives_the_same_decision() -> None:
    big = frame(20_000, 3, charges_shift=0.3)
    full, _ = check_drift(frame(1000, 1), big, SCHEMA, PARAMS)
    sampled_frame = sample_rows(big, 2000, seed=42)
    sampled, _ = check_drift(frame(1000, 1), sampled_frame, SCHEMA, PARAMS, rows=len(big))
    assert len(sampled_frame) == 2000 and sample_rows(big, 2000, seed=42).equals(sampled_frame)
    assert sampled.drifted_columns == full.drifted_columns == ("charges",)
    assert sampled.rows == 20_000 and sampled.rows_checked == 2000
    assert sample_rows(big, None, seed=1) is big


def test_quality_against_the_champion_test_figures() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.6, 0.4, 0.9, 0.2, 0.8])
    quality = batch_quality(labels, scores, 0.5, {"roc_auc": 0.95, "f1": 0.7})
    assert quality is not None and round(quality.roc_auc, 4) == round(8 / 9, 4)
    assert round(quality.drop, 4) == round(0.95 - 8 / 9, 4)
    assert batch_quality(np.zeros(4, dtype=int), scores[:4], 0.5, {"roc_auc": 0.9, "f1": 0.5}) is None


def test_report_is_saved_as_html_and_json(tmp_path: Path) -> None:
    result, snapshot = check_drift(frame(1000, 1), frame(1000, 2, charges_shift=0.5), SCHEMA, PARAMS)
    save_snapshot(snapshot, tmp_path / "drift.html", tmp_path / "drift.json")
    assert "<html" in (tmp_path / "drift.html").read_text()[:2000].lower()
    document = json.loads((tmp_path / "drift.json").read_text())
    assert any("DriftedColumnsCount" in metric["metric_name"] for metric in document["metrics"])
    assert result.to_dict()["drifted_columns"] == ["charges"]


def test_drift_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """Evidently's page is a JavaScript app with its bundle inline: rendered offline, its widgets fill in."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing on CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("/usr/bin/chromium not installed (apt-get install chromium)")
    _, snapshot = check_drift(frame(1000, 1), frame(1000, 2, charges_shift=0.5), SCHEMA, PARAMS)
    page = tmp_path / "drift.html"
    save_snapshot(snapshot, page, tmp_path / "drift.json")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--virtual-time-budget=15000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [str(chromium), *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    empty_root = re.compile(r'<div id="root_[^"]+">\s*</div>')
    assert empty_root.search(page.read_text()), "the saved page holds empty widget roots for the script to fill"
    assert re.search(r'<div id="root_[^"]+"><div class="Mui', dom), "the widgets did not render"
    assert not empty_root.search(dom)
