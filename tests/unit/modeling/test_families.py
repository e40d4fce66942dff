"""Model pipelines: fit raw rows, ignore unseen categories, and round-trip through skops safely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.neighbors import KNeighborsClassifier

from optiflow.data.schema import Schema
from optiflow.errors import IntegrityError
from optiflow.modeling.candidates import load_candidate, load_model, save_candidate, save_model
from optiflow.modeling.families import FAMILIES, build_pipeline

SCHEMA = Schema(numeric=("tenure", "charges"), categorical=("contract",))


def _data(rows: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, rows).astype(float),
            "charges": rng.normal(60, 20, rows),
            "contract": rng.choice(["monthly", "yearly"], rows),
        }
    )
    frame.loc[3, "charges"] = np.nan
    y = ((frame["contract"] == "monthly") & (frame["tenure"] < 30)).astype(int).to_numpy()
    return frame, y


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_fits_raw_rows_and_ignores_unseen_categories(family: str) -> None:
    frame, y = _data()
    model = build_pipeline(family, {}, SCHEMA, seed=0).fit(frame, y)
    unseen = frame.head(3).assign(contract="weekly")
    probabilities = model.predict_proba(unseen)
    assert probabilities.shape == (3, 2) and np.isfinite(probabilities).all()
    assert model.score(frame, y) > 0.8


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_save_load_round_trip_is_identical_and_byte_stable(family: str, tmp_path: Path) -> None:
    frame, y = _data()
    model = build_pipeline(family, {}, SCHEMA, seed=0).fit(frame, y)
    save_model(model, tmp_path / "a.skops")
    save_model(build_pipeline(family, {}, SCHEMA, seed=0).fit(frame, y), tmp_path / "b.skops")
    assert (tmp_path / "a.skops").read_bytes() == (tmp_path / "b.skops").read_bytes()
    np.testing.assert_array_equal(load_model(tmp_path / "a.skops").predict_proba(frame), model.predict_proba(frame))


def test_the_saved_bytes_do_not_depend_on_the_cores_the_fit_ran_on(tmp_path: Path) -> None:
    """A dvc.lock committed on a 2-core machine must hold on an 8-core one: gradient boosting's thread count is not
    saved (its bin mapper kept it), and the model scores as fitted."""
    from threadpoolctl import threadpool_limits

    frame, y = _data()
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="openmp"):
            model = build_pipeline("hist_gradient_boosting", {}, SCHEMA, seed=0).fit(frame, y)
        save_model(model, tmp_path / f"{threads}.skops")
        loaded = load_model(tmp_path / f"{threads}.skops")
        np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))
    assert (tmp_path / "1.skops").read_bytes() == (tmp_path / "2.skops").read_bytes()


def test_untrusted_types_are_refused(tmp_path: Path) -> None:
    frame, y = _data()
    sio.dump(KNeighborsClassifier().fit(frame[["tenure"]], y), tmp_path / "knn.skops")
    with pytest.raises(IntegrityError, match=r"untrusted types .*KDTree"):
        load_model(tmp_path / "knn.skops")


def test_tampered_candidate_is_refused(tmp_path: Path) -> None:
    frame, y = _data()
    save_candidate(
        tmp_path / "lr", build_pipeline("logistic_regression", {}, SCHEMA, seed=0).fit(frame, y), {"family": "lr"}
    )
    _, meta = load_candidate(tmp_path / "lr")
    assert meta["family"] == "lr" and len(meta["files"]["model.skops"]) == 64
    (tmp_path / "lr" / "model.skops").write_bytes((tmp_path / "lr" / "model.skops").read_bytes()[:-10] + b"0" * 10)
    with pytest.raises(IntegrityError, match="does not match"):
        load_candidate(tmp_path / "lr")


def test_seed_reaches_the_estimator() -> None:
    model = build_pipeline("hist_gradient_boosting", {}, SCHEMA, seed=123)
    assert model.named_steps["model"].random_state == 123
