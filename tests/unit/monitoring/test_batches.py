"""Monitoring helpers: batch discovery, history table and plot, the retraining dataset of each window policy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from optiflow.config import load_config
from optiflow.errors import DataError
from optiflow.monitoring.batches import (
    append_history,
    batch_id,
    build_retraining_dataset,
    keep_batch,
    new_batches,
    pending_batches,
    plot_history,
    read_batch,
    read_history,
)
from tests.conftest import make_project


def test_new_batches_skips_what_the_history_holds(tmp_path: Path) -> None:
    for name in ("002-b.parquet", "001-a.csv", "003-c.csv.gz", "notes.txt"):
        (tmp_path / name).write_text("x")
    history = pd.DataFrame({"batch_id": ["001-a"]})
    assert [p.name for p in new_batches(tmp_path, history)] == ["002-b.parquet", "003-c.csv.gz"]
    assert new_batches(tmp_path / "002-b.parquet", history) == [tmp_path / "002-b.parquet"]
    assert batch_id(tmp_path / "003-c.csv.gz") == "003-c"
    with pytest.raises(DataError, match="no such batch file or folder"):
        new_batches(tmp_path / "missing", history)


def test_a_fresh_project_without_its_batches_folder_has_no_pending_batch(tmp_path: Path) -> None:
    config = load_config(make_project(tmp_path))
    assert not config.path("batches").exists()
    assert pending_batches(config) == []  # the scheduled run: nothing arrived yet
    with pytest.raises(DataError, match="no such batch file or folder"):
        pending_batches(config, "data/elsewhere")  # a folder the caller named must exist


def test_history_appends_rows_and_plots(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    assert read_history(path).empty
    for number, decision in enumerate(["ignored", "promoted", "invalid"]):
        append_history(
            path,
            {
                "batch_id": f"b{number}",
                "decision": decision,
                "drift_share": 0.1 * number,
                "labelled_rows": 10,
                "roc_auc": 0.8,
                "quality_drop": 0.01,
                "prediction_drift": 0.05,
            },
        )
    history = read_history(path)
    assert list(history["decision"]) == ["ignored", "promoted", "invalid"] and list(history.index) == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown history columns"):
        append_history(path, {"batch_id": "x", "colour": "red"})
    plot_history(history, tmp_path / "history.png", 0.05, 0.05)
    assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"


def test_unlabelled_batch_is_read_without_a_target(tmp_path: Path, churn_sample: pd.DataFrame) -> None:
    config = load_config(make_project(tmp_path, churn_sample))
    churn_sample.head(20).drop(columns=["churn"]).to_csv(tmp_path / "batch.csv", index=False)
    batch = read_batch(tmp_path / "batch.csv", config.params.data)
    assert "churn" not in batch.columns and len(batch) == 20


@pytest.mark.parametrize(
    ("policy", "rows"), [("all", 1500 + 30), ("last_k", 20), ("training_plus_labelled", 1500 + 20)]
)
def test_retraining_dataset_follows_the_window_policy(
    tmp_path: Path, churn_sample: pd.DataFrame, policy: str, rows: int
) -> None:
    config = load_config(make_project(tmp_path, churn_sample, monitor__window=policy, monitor__last_k=2))
    typed = read_batch(tmp_path / "data" / "input.csv", config.params.data)
    for name, frame in {"b1": typed.head(10), "b2": typed.head(10), "b3": typed.head(10)}.items():
        keep_batch(config, name, frame)
    history = pd.DataFrame(
        {"batch_id": ["b1", "b2"], "decision": ["promoted", "ignored"], "labelled_rows": [10, 10], "at": ["", ""]}
    )
    path, window = build_retraining_dataset(config, history, "b3")
    assert window["rows"] == rows and len(pd.read_parquet(path)) == rows
    assert path == config.path("retraining") / "b3.parquet"
