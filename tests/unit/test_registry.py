"""Alias decisions and tracking location: pure rules, no MLflow server needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from optiflow.config import TrackingParams
from optiflow.registry import decide_alias, tracking_uri


def test_first_version_becomes_champion() -> None:
    decision = decide_alias(0.80, None, min_delta=0.01, champion_version=None)
    assert decision.promote and decision.reason == "no champion yet"


@pytest.mark.parametrize(
    ("challenger", "champion", "min_delta", "promote"),
    [(0.85, 0.84, 0.005, True), (0.845, 0.84, 0.01, False), (0.84, 0.84, 0.0, False), (0.83, 0.84, 0.0, False)],
)
def test_challenger_must_beat_champion_by_min_delta(challenger, champion, min_delta, promote) -> None:
    decision = decide_alias(challenger, champion, min_delta, champion_version="3")
    assert decision.promote is promote
    assert "v3" in decision.reason and f"{champion:.4f}" in decision.reason


def test_relative_sqlite_uri_resolves_against_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracking_uri(TrackingParams(uri="sqlite:///mlflow.db"), tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking_uri(TrackingParams(uri="sqlite:////abs/m.db"), tmp_path) == "sqlite:////abs/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://127.0.0.1/mlflow")
    assert tracking_uri(TrackingParams(), tmp_path) == "postgresql://127.0.0.1/mlflow"
