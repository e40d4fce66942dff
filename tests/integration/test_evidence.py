"""Evidence discipline end to end: the stage functions (as `dvc repro` runs them) on a small project, then again with
the test labels replaced by noise. Every choice (model, compressed variant, calibration, threshold, fairness
mitigation) rests on train and valid, so none moves; only the test figures do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from optiflow.config import load_config
from optiflow.io import read_parquet, write_parquet
from tasks.stages import stage, task_for
from tests.conftest import make_project

CHOOSING = ("ingest", "split", "tune", "train", "compress", "evaluate", "fairness")
AFTER_TEST_CHANGES = ("compress", "evaluate", "fairness")


def _choices(root: Path) -> dict:
    metrics = json.loads((root / "reports/test_metrics.json").read_text())  # paths.metrics, evaluate's full record
    compression = json.loads((root / "reports/compression.json").read_text())
    fairness = json.loads((root / "reports/fairness.json").read_text())
    mitigation = fairness["mitigation"] or {}
    return {
        "model": metrics["selected"],
        "candidates on valid": metrics["candidates"],
        "calibration": metrics["calibration"],
        "threshold": metrics["threshold"],
        "decisions": {name: row for name, row in metrics["decisions"].items() if name != "test metrics"},
        "compressed variant": compression["chosen"],
        # the verdicts: a judgement's figures may differ in the last digits between two runs of the ONNX Runtime
        # int8 twins, which is not a choice
        "variant verdicts": {name: row["passed"] for name, row in compression["judgements"].items()},
        "mitigation decided on": fairness["mitigation_decided_on"],
        "mitigation": {key: mitigation.get(key) for key in ("columns", "thresholds", "fitted_on")},
    }


def test_noise_in_place_of_the_test_labels_changes_no_choice(tmp_path: Path, churn_sample: pd.DataFrame) -> None:
    params = make_project(tmp_path, churn_sample, fairness__max_equalized_odds_difference=0.05)
    config = load_config(params)
    for name in CHOOSING:
        task_for(stage(name)).fn(config)
    honest = _choices(tmp_path)
    honest_test = json.loads((tmp_path / "reports/test_metrics.json").read_text())["test"]

    test = read_parquet(config.path("test"))
    noise = np.random.default_rng(0).choice(["Yes", "No"], size=len(test))
    write_parquet(config.path("test"), test.assign(churn=noise))
    for name in AFTER_TEST_CHANGES:
        task_for(stage(name)).fn(config)

    assert _choices(tmp_path) == honest
    noisy_test = json.loads((tmp_path / "reports/test_metrics.json").read_text())["test"]
    assert noisy_test["roc_auc"] != honest_test["roc_auc"]  # the test split was scored, only to report
