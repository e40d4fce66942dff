"""Quarantine: what counts as an upstream break (and what does not), and the list / release / drop a person runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optiflow.config import MonitorParams, load_config
from optiflow.data.schema import Schema
from optiflow.errors import OptiflowError
from optiflow.monitoring.batches import append_history, read_history
from optiflow.monitoring.quarantine import drop, quarantine_batch, quarantined, release, upstream_breaks
from optiflow.monitoring.retraining import window_batches
from tests.conftest import make_project

SCHEMA = Schema(("tenure", "charges"), ("contract",))
PARAMS = MonitorParams()


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n).astype(float),
            "charges": rng.uniform(20, 110, n),
            "contract": rng.choice(["monthly", "one year", "two year"], n, p=[0.6, 0.25, 0.15]),
        }
    )


REFERENCE = _rows(1000, 0)


def test_ordinary_change_is_no_break() -> None:
    batch = _rows(500, 1).assign(charges=lambda f: f["charges"] * 1.4)  # a 40% price rise is drift, not a break
    assert upstream_breaks(REFERENCE, batch, SCHEMA, PARAMS) == []


def test_units_changed_upstream_are_a_break() -> None:
    years = _rows(500, 2).assign(tenure=lambda f: (f["tenure"] / 12).round(2))
    (reason,) = upstream_breaks(REFERENCE, years, SCHEMA, PARAMS)
    assert reason.startswith("column 'tenure': mean size") and "units changed upstream" in reason


def test_a_changed_set_of_categories_is_a_break_but_chance_is_not() -> None:
    renamed = _rows(500, 3).replace({"contract": {"one year": "1 year"}})
    (reason,) = upstream_breaks(REFERENCE, renamed, SCHEMA, PARAMS)
    assert "column 'contract'" in reason and "new ['1 year']" in reason and "gone ['one year']" in reason
    rare = _rows(500, 4)
    rare.loc[:2, "contract"] = "paused"  # 3 rows of 500: a value the 1,000 reference rows may simply have missed
    small = _rows(40, 5).query("contract != 'two year'")  # 40 rows can miss a 15% value by chance
    segment = _rows(500, 6).query("contract == 'monthly'")  # one segment's batch: values absent, none new
    assert upstream_breaks(REFERENCE, rare, SCHEMA, PARAMS) == []
    assert upstream_breaks(REFERENCE, small, SCHEMA, PARAMS) == []
    assert upstream_breaks(REFERENCE, segment, SCHEMA, PARAMS) == []


def test_list_release_and_drop(tmp_path: Path, churn_sample: pd.DataFrame) -> None:
    config = load_config(make_project(tmp_path))
    for name in ("b1", "b2"):  # recorded as a failed validation records them: no labelled rows counted
        append_history(config.path("monitoring_history"), {"batch_id": name, "decision": "invalid",
                                                            "reason": "looks broken", "labelled_rows": 0})  # fmt: skip
        quarantine_batch(config, name, f"data/batches/{name}.csv", churn_sample.head(20), ["tenure in years"])
    assert [record.batch_id for record in quarantined(config)] == ["b1", "b2"]
    assert window_batches(read_history(config.path("monitoring_history")), None, "all", 3) == (True, [])

    release(config, "b1", "checked with the data team")
    assert (config.path("monitored") / "b1.parquet").is_file()
    drop(config, "b2", "feed was replayed")
    assert quarantined(config) == [] and not (config.path("monitored") / "b2.parquet").exists()
    history = read_history(config.path("monitoring_history")).set_index("batch_id")
    assert history.loc["b1", "decision"] == "released" and "checked with the data team" in history.loc["b1", "reason"]
    assert history.loc["b1", "labelled_rows"] == 20  # a released batch counts its labelled rows
    assert history.loc["b2", "decision"] == "dropped" and "looks broken" in history.loc["b2", "reason"]
    assert window_batches(history.reset_index(), None, "all", 3) == (True, ["b1"])
    with pytest.raises(OptiflowError, match="no batch 'b9' in quarantine"):
        release(config, "b9", "")
