"""Profiling a table for `optiflow init`: each column's kind, the target's labels, and the settings that follow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optiflow.data.profile import data_settings, derived_settings, profile_table, propose
from optiflow.errors import ConfigError
from tests.own_tables import credit, leaky, retail

SOURCE = Path("t.csv")


def _kinds(frame: pd.DataFrame, target: str) -> dict[str, str]:
    return {column.name: column.kind for column in profile_table(frame, SOURCE, target).columns}


def test_each_column_gets_the_kind_init_treats_it_as() -> None:
    rows = 400
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(rows)],
            "row_number": np.arange(rows),  # consecutive whole numbers: an id
            "created_at": pd.date_range("2024-01-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M"),
            "comment": [f"free text {i}" for i in range(rows)],
            "empty": np.nan,
            "flag": rng.integers(0, 2, rows),
            "amount": rng.normal(100, 10, rows),
            "plan": rng.choice(["a", "b", "c"], rows),
            "y": rng.integers(0, 2, rows),
        }
    )
    assert _kinds(frame, "y") == {
        "customer_id": "id",
        "row_number": "text",  # one id per table: a second unique column is left out as text
        "created_at": "time",
        "comment": "text",
        "empty": "empty",
        "flag": "categorical",
        "amount": "numeric",
        "plan": "categorical",
    }


@pytest.mark.parametrize(
    ("labels", "positive", "expected"),
    [
        ([0, 1, 1, 0], None, 1),
        ([True, False, False, False], None, True),
        (["good", "bad", "good", "good"], None, "bad"),
        (["No", "Yes", "No", "No"], None, "Yes"),
        (["stay", "leave", "stay", "stay"], None, "leave"),  # no name reads as the event: the rarer label
        (["good", "bad", "good", "good"], "good", "good"),
    ],
)
def test_the_positive_label(labels: list, positive: str | None, expected) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0] * 10, "y": labels * 10})
    profile = profile_table(frame, SOURCE, "y", positive)
    assert profile.positive_label == expected and profile.negative_label != expected


def test_a_target_init_cannot_use_is_named() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match=r"no column 'lable' to predict; did you mean 'label'\?"):
        profile_table(frame, SOURCE, "lable")
    with pytest.raises(ConfigError, match="must hold exactly two labels, found 3"):
        profile_table(frame, SOURCE, "label")
    with pytest.raises(ConfigError, match=r"--positive 'maybe' is not a value of 'y'"):
        profile_table(frame.assign(y=["a", "b", "a"]), SOURCE, "y", "maybe")


def test_settings_follow_the_columns_never_the_default_table() -> None:
    frame = retail(2000, 1)
    profile = profile_table(frame, SOURCE, "churned")
    data = data_settings(profile, "data/retail.csv")
    settings = derived_settings(profile, frame, data)
    assert data.id_columns == ("customer_id",) and data.ignore_columns == ("signup",)
    missing = frame[["spend", "days_since_last"]].isna().mean()  # twice the share seen, rounded up to a percent
    assert settings["validate"]["null_fraction"] == {c: np.ceil(200 * share) / 100 for c, share in missing.items()}
    assert "city" not in settings["validate"]["domains"] and settings["validate"]["domains"]["region"]
    assert settings["evaluate"]["slices"] == ["region", "channel"]
    assert settings["robustness"]["bounds"]["discount_rate"] == {"relative": 0.05}
    assert settings["gates"]["min_quality"]["pr_auc"] == pytest.approx(0.27 + 0.73 * 0.2, abs=0.02)
    named = {column for scenario in settings["simulate"]["scenarios"] for column in [scenario.get("column"),
             *scenario.get("where", {})] if column}  # fmt: skip
    assert named <= set(frame.columns) and not named & {"tenure", "contract", "monthly_charges"}
    assert settings["monitor"]["drift_tests"]["city"]["method"] == "two_sample_chisquare"


def test_sensitive_features_are_declared_by_the_user_and_only_suggested_by_name() -> None:
    frame = credit(600, 1)
    suggested = propose(frame, SOURCE, "t.csv", "risk")
    assert suggested.data.sensitive_features == () and suggested.profile.sensitive_candidates() == ["age", "sex"]
    declared = propose(frame, SOURCE, "t.csv", "risk", sensitive=("age",))
    assert declared.data.sensitive_features == ("age",)
    assert "columns whose names suggest one: sex" in declared.comments[("data", "sensitive_features")]
    with pytest.raises(ConfigError, match=r"--sensitive names no column of t.csv: 'gender'"):
        propose(frame, SOURCE, "t.csv", "risk", sensitive=("gender",))


def test_a_column_that_gives_the_label_away_is_reported_at_init() -> None:
    proposal = propose(leaky(600, 1), SOURCE, "t.csv", "risk")
    assert [leak.split(":")[0] for leak in proposal.leaks] == ["collections_status"]
    assert "a function of the target" in proposal.leaks[0]
    assert propose(credit(600, 1), SOURCE, "t.csv", "risk").leaks == []
