"""Monitoring helpers: batch discovery, history table and plot, the retraining dataset of each window policy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from optiflow.config import load_config
from optiflow.data.keys import KEY_COLUMN, ROLE_COLUMN, source_roles
from optiflow.errors import DataError
from optiflow.monitoring.batches import (
    append_history,
    batch_id,
    build_retraining_dataset,
    draw_history,
    keep_batch,
    new_batches,
    pending_batches,
    plot_history,
    read_batch,
    read_history,
    record_history,
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


def test_the_history_plot_is_drawn_on_request_not_per_row(tmp_path: Path) -> None:
    """A monitoring run draws the plot once after its batches: a row alone does not redraw it."""
    config = load_config(make_project(tmp_path))
    plot = config.path("monitoring_history").with_suffix(".png")
    assert draw_history(config) is None and not plot.exists()  # nothing monitored yet: nothing to draw
    for number in range(2):
        record_history(config, {"batch_id": f"b{number}", "decision": "ignored", "drift_share": 0.0, "roc_auc": 0.8})
    assert len(read_history(config.path("monitoring_history"))) == 2 and not plot.exists()
    assert draw_history(config) == plot and plot.read_bytes()[:4] == b"\x89PNG"


def test_unlabelled_batch_is_read_without_a_target(tmp_path: Path, churn_sample: pd.DataFrame) -> None:
    config = load_config(make_project(tmp_path, churn_sample))
    churn_sample.head(20).drop(columns=["churn"]).to_csv(tmp_path / "batch.csv", index=False)
    batch = read_batch(tmp_path / "batch.csv", config.params.data)
    assert "churn" not in batch.columns and len(batch) == 20


@pytest.mark.parametrize(
    ("policy", "chosen"),
    [("all", ["b1", "b2", "b3"]), ("last_k", ["b2", "b3"]), ("training_plus_labelled", ["b2", "b3"])],
)
def test_retraining_dataset_follows_the_window_policy(
    tmp_path: Path, churn_sample: pd.DataFrame, policy: str, chosen: list[str]
) -> None:
    config = load_config(make_project(tmp_path, churn_sample, monitor__window=policy, monitor__last_k=2))
    data, split = config.params.data, config.params.split
    source = read_batch(tmp_path / "data" / "input.csv", data)  # keyed as ingest keys it
    roles = pd.Series(source_roles(source[KEY_COLUMN], split), index=source.index)
    pool = source[roles == "pool"]
    for number, name in enumerate(("b1", "b2", "b3")):
        keep_batch(config, name, pool.iloc[10 * number : 10 * number + 10])
    history = pd.DataFrame(
        {"batch_id": ["b1", "b2"], "decision": ["promoted", "ignored"], "labelled_rows": [10, 10], "at": ["", ""]}
    )
    path, window = build_retraining_dataset(config, history, "b3")
    assert path == config.path("retraining") / "b3.parquet"
    assert window["batches"] == chosen and window["evaluation_batch"] == "b3"
    assert window["training_batches"] == chosen[:-1]
    built = pd.read_parquet(path).set_index(KEY_COLUMN)
    assert len(built) == window["rows"] and built.index.is_unique
    role = built[ROLE_COLUMN]
    assert (role[pool.iloc[20:30][KEY_COLUMN]] == "holdout").all()  # the newest batch only evaluates
    older = pool.iloc[: 10 * len(chosen) - 10] if policy == "all" else pool.iloc[10:20]
    assert role[older[KEY_COLUMN]].isin(["train", "valid"]).all()
    for source_role in ("train", "valid", "test", "holdout"):
        keys = source.loc[roles == source_role, KEY_COLUMN]
        present = keys.isin(built.index)
        if source_role in ("test", "holdout") or policy != "last_k":
            assert present.all() and (role[keys] == source_role).all(), source_role
        else:
            assert not present.any(), source_role  # last_k leaves the training data out
    assert not set(pool.iloc[30:][KEY_COLUMN]) & set(built.index)  # pool rows no batch brought back stay out
