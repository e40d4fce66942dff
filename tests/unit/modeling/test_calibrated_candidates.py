"""A calibrated candidate on disk: one skops file for every family (the MLP too), loaded back with the same
calibrated probabilities, its pipeline reachable for explanations, and refused when a type is not trusted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from optiflow.assess.calibration import calibrate
from optiflow.data.schema import Schema
from optiflow.errors import IntegrityError
from optiflow.modeling import candidates
from optiflow.modeling.candidates import MODEL_FILE, load_candidate, save_candidate, uncalibrated
from optiflow.modeling.families import build_pipeline
from tests.unit.conftest import churn_like

SCHEMA = Schema(("x1", "x2"), ("plan", "group"))
FAST = {
    "logistic_regression": {},
    "hist_gradient_boosting": {"max_iter": 20},
    "mlp": {"hidden_units": 8, "max_epochs": 5, "batch_size": 64},
}


@pytest.mark.parametrize(("family", "method"), [(f, m) for f in FAST for m in ("sigmoid", "isotonic")])
def test_calibrated_candidates_round_trip_through_skops(tmp_path: Path, family: str, method: str) -> None:
    frame = churn_like(600, seed=1)
    y = frame.pop("y").to_numpy()
    model = build_pipeline(family, FAST[family], SCHEMA, seed=0, device="cpu").fit(frame[:400], y[:400])
    calibrated = calibrate(model, frame[400:], y[400:], method)
    raw = model.predict_proba(frame)[:, 1]
    save_candidate(tmp_path / family, calibrated, {"family": family})
    loaded, meta = load_candidate(tmp_path / family)
    assert list(meta["files"]) == [MODEL_FILE]
    np.testing.assert_allclose(loaded.predict_proba(frame), calibrated.predict_proba(frame), atol=1e-12)
    assert not np.allclose(loaded.predict_proba(frame)[:, 1], raw)  # calibrated, not the raw scores
    inner = uncalibrated(loaded)
    assert isinstance(inner, Pipeline)
    np.testing.assert_allclose(inner.predict_proba(frame)[:, 1], raw, atol=1e-6)
    assert uncalibrated(model) is model


def test_a_calibrated_file_is_refused_without_its_trusted_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = churn_like(300, seed=2)
    y = frame.pop("y").to_numpy()
    model = build_pipeline("logistic_regression", {}, SCHEMA, seed=0).fit(frame, y)
    save_candidate(tmp_path / "lr", calibrate(model, frame, y, "sigmoid"), {"family": "logistic_regression"})
    trimmed = tuple(t for t in candidates.TRUSTED_TYPES if "calibration" not in t)
    monkeypatch.setattr(candidates, "TRUSTED_TYPES", trimmed)
    with pytest.raises(IntegrityError, match=r"untrusted types.*_CalibratedClassifier"):
        load_candidate(tmp_path / "lr")
