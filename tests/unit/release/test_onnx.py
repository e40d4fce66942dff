"""The ONNX export of the served pipeline: parity with the Python model for every family, a broken export caught by
the parity check (and never served), and the runtime choice when a registered version is loaded."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from mlflow import MlflowClient
from onnx import numpy_helper

from optiflow.config import Config
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels
from optiflow.errors import IntegrityError
from optiflow.modeling.compression import quantize, quantize_onnx
from optiflow.modeling.families import build_pipeline
from optiflow.release.onnx import (
    PARITY_TOLERANCE,
    OnnxModel,
    check_parity,
    export_checked,
    export_pipeline,
    load_onnx,
    write_export,
)
from optiflow.release.registry import ARTIFACTS_TAG, connect, load_registered
from optiflow.release.serving_spec import ServingSpec
from tests.registered import register_model, registry_project, typed_frame

NAME = "optiflow-churn"
FAST = {
    "logistic_regression": {},
    "hist_gradient_boosting": {"max_iter": 60, "max_leaf_nodes": 15},
    "mlp": {"hidden_units": 16, "max_epochs": 5, "device": "cpu"},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, churn_sample: pd.DataFrame) -> Config:
    return registry_project(tmp_path_factory.mktemp("onnx"), churn_sample)


@pytest.fixture(scope="module")
def rows(project: Config, churn_sample: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation) typed frames; validation gets missing values in a numeric and a categorical column."""
    typed = typed_frame(project, churn_sample).sample(frac=1.0, random_state=0)  # the sample is sorted by label
    train, valid = typed.iloc[:1000].reset_index(drop=True), typed.iloc[1000:].reset_index(drop=True)
    valid.loc[:9, "tenure"] = np.nan
    valid.loc[5:14, "contract"] = np.nan  # what check_rows makes of a blank category
    valid.loc[15:19, "payment_method"] = None  # a value sklearn's imputer does not see as missing
    return train, valid


def _fit(project: Config, train: pd.DataFrame, family: str):
    schema = resolve_schema(train, project.params.data)
    model = build_pipeline(family, FAST[family], schema, 0).fit(
        train[list(schema.features)], labels(train, project.params.data)
    )
    return model, ServingSpec.from_frame(train, schema.features, 0.4)


@pytest.mark.parametrize("family", sorted(FAST))
def test_every_family_exports_with_parity_on_the_validation_rows(project: Config, rows, family: str) -> None:
    train, valid = rows
    model, spec = _fit(project, train, family)
    exported = export_checked(model, spec, valid)
    parity = exported.parity
    assert exported.model is not None and parity.passed, parity.message
    assert parity.rows == len(valid) and parity.decisions_differ == 0
    assert parity.max_abs_diff <= PARITY_TOLERANCE and parity.tolerance == PARITY_TOLERANCE
    served = pickle.loads(pickle.dumps(OnnxModel(exported.model, spec))).predict_proba(valid[list(spec.features)])
    np.testing.assert_allclose(served, model.predict_proba(valid[list(spec.features)]), rtol=0, atol=PARITY_TOLERANCE)
    assert served.shape == (len(valid), 2)  # and it survived a pickle round trip, as on the way to a Dask worker


def test_an_int8_network_exports_only_from_onnx_runtime(project: Config, rows) -> None:
    train, valid = rows
    model, spec = _fit(project, train, "mlp")
    matrix = model[:-1].transform(train[list(spec.features)])
    onnx_int8 = type(model)([*model.steps[:-1], ("model", quantize_onnx(model[-1], matrix))])
    assert export_checked(onnx_int8, spec, valid).parity.passed
    torch_int8 = type(model)([*model.steps[:-1], ("model", quantize(model[-1]))])
    refused = export_checked(torch_int8, spec, valid)
    assert refused.model is None and not refused.parity.passed
    assert "no ONNX export: NotImplementedError: torch's dynamic int8 Linear layers" in refused.parity.message


def _broken(model: bytes, name_part: str, factor: float) -> bytes:
    """The graph with one initializer (the first whose name contains ``name_part``) scaled by ``factor``."""
    graph = onnx.load_from_string(model)
    tensor = next(t for t in graph.graph.initializer if name_part in t.name)
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * factor, tensor.name))
    return graph.SerializeToString()


@pytest.mark.parametrize("factor", [1.001, 1.5])
def test_the_parity_check_fails_a_deliberately_broken_export(project: Config, rows, factor: float) -> None:
    train, valid = rows
    model, spec = _fit(project, train, "logistic_regression")
    broken = OnnxModel(_broken(export_pipeline(model, spec), "coef", factor), spec)
    parity = check_parity(model, broken, valid[list(spec.features)], spec.threshold)
    assert not parity.passed and parity.max_abs_diff > PARITY_TOLERANCE
    assert "parity FAILED" in parity.message and f"tolerance {PARITY_TOLERANCE:g}" in parity.message
    if factor > 1.1:  # a gross error moves decisions too, and says how many
        assert parity.decisions_differ > 0 and f"{parity.decisions_differ} of {len(valid)} decisions" in parity.message


def test_a_failed_parity_never_serves_auto_falls_back_and_onnx_refuses(project: Config, rows, tmp_path: Path) -> None:
    train, valid = rows
    model, spec = _fit(project, train, "logistic_regression")
    exported = export_checked(model, spec, valid)
    broken = _broken(exported.model, "coef", 1.5)
    parity = check_parity(model, OnnxModel(broken, spec), valid[list(spec.features)], spec.threshold)
    write_export(tmp_path, type(exported)(broken, parity))
    served, reason = load_onnx(tmp_path, spec, "auto", "m v1")
    assert served is None and "ONNX parity did not hold at registration" in reason and "Python model serves" in reason
    with pytest.raises(IntegrityError, match="parity did not hold"):
        load_onnx(tmp_path, spec, "onnx", "m v1")
    assert load_onnx(tmp_path / "nothing", spec, "auto", "m v1")[1].startswith("m v1 was registered without")


def test_a_registered_version_serves_its_onnx_graph_when_parity_held(
    project: Config, rows, caplog: pytest.LogCaptureFixture
) -> None:
    train, valid = rows
    version = register_model(
        project, train, "hist_gradient_boosting", parity_rows=valid, **FAST["hist_gradient_boosting"]
    )
    connect(project)
    tags = MlflowClient().get_model_version(NAME, version).tags
    assert tags["optiflow.onnx.parity"] == "passed" and "parity holds" in tags["optiflow.onnx.check"]
    with caplog.at_level(logging.INFO, logger="optiflow.release.registry"):
        onnx_loaded = load_registered(NAME, version=version, runtime="auto")
    assert onnx_loaded.runtime == "onnx" and isinstance(onnx_loaded.model, OnnxModel)
    assert "every file verified; ONNX Runtime (max |p_onnx - p_python|" in caplog.text
    python_loaded = load_registered(NAME, version=version, runtime="python")
    assert python_loaded.runtime == "python" and not isinstance(python_loaded.model, OnnxModel)
    features = valid[list(onnx_loaded.spec.features)]
    np.testing.assert_allclose(
        onnx_loaded.model.predict_proba(features), python_loaded.model.predict_proba(features), atol=PARITY_TOLERANCE
    )


def test_a_broken_exporter_at_registration_is_recorded_and_the_python_model_serves(
    project: Config, rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, valid = rows
    import optiflow.release.onnx as onnx_module

    real = onnx_module.export_pipeline
    monkeypatch.setattr(onnx_module, "export_pipeline", lambda model, spec: _broken(real(model, spec), "coef", 2.0))
    version = register_model(project, train, "logistic_regression", parity_rows=valid)
    connect(project)
    tags = MlflowClient().get_model_version(NAME, version).tags
    assert tags["optiflow.onnx.parity"] == "failed" and "parity FAILED" in tags["optiflow.onnx.check"]
    loaded = load_registered(NAME, version=version, runtime="auto")
    assert loaded.runtime == "python"
    recorded = json.loads(tags[ARTIFACTS_TAG])  # the graph and its parity record are sha256-checked version files
    assert {"data/optiflow/onnx/model.onnx", "data/optiflow/onnx/parity.json"} <= set(recorded)


def _calibrated(project: Config, train: pd.DataFrame, fit_rows: pd.DataFrame, family: str, method: str):
    """The family's pipeline calibrated on ``fit_rows`` as the training flow does it, and its serving spec."""
    from optiflow.assess.calibration import calibrate

    model, spec = _fit(project, train, family)
    features = fit_rows[list(spec.features)]
    return calibrate(model, features, labels(fit_rows, project.params.data), method), spec


def _assert_parity(exported, calibrated, spec: ServingSpec, rows: pd.DataFrame, atol: float) -> None:
    assert exported.model is not None and exported.parity.passed, exported.parity.message
    served = OnnxModel(exported.model, spec).predict_proba(rows[list(spec.features)])
    np.testing.assert_allclose(served, calibrated.predict_proba(rows[list(spec.features)]), rtol=0, atol=atol)


@pytest.mark.parametrize("family", ["logistic_regression", "hist_gradient_boosting", "mlp"])
def test_a_sigmoid_calibrated_candidate_exports_with_parity_on_its_calibration_rows(
    project: Config, rows, family: str
) -> None:
    """As the training flow registers it: calibrated on the validation rows, parity checked on the same rows."""
    train, valid = rows
    calibrated, spec = _calibrated(project, train, valid, family, "sigmoid")
    _assert_parity(export_checked(calibrated, spec, valid), calibrated, spec, valid, PARITY_TOLERANCE)


@pytest.mark.parametrize("family", ["logistic_regression", "hist_gradient_boosting"])
def test_an_isotonic_calibrated_candidate_exports_with_parity_on_unseen_rows(
    project: Config, rows, family: str
) -> None:
    """The isotonic map (clipped, interpolated as numpy does) is exact on float64 scores; tree ensembles score in
    float32, whose error the map's steep segments can amplify, so parity is checked on rows it was not fitted on."""
    train, valid = rows
    fit_rows, unseen = valid.iloc[:300].reset_index(drop=True), valid.iloc[300:].reset_index(drop=True)
    calibrated, spec = _calibrated(project, train, fit_rows, family, "isotonic")
    exact = 1e-12 if family == "logistic_regression" else PARITY_TOLERANCE
    _assert_parity(export_checked(calibrated, spec, unseen), calibrated, spec, unseen, exact)


def test_parity_at_a_chosen_threshold_survives_a_runtime_a_rounding_error_away(project: Config, rows) -> None:
    """Registration checks parity on the validation rows, which hold the chosen score itself: the row that set the
    cut, every row of an isotonic plateau. A runtime within the tolerance (here 1e-7 below the Python model, the size
    of a float32 rounding; a graph errs either way, row by row) must make the same decisions there; a cut on the
    score itself left them to the direction of each rounding."""
    from optiflow.assess.calibration import choose_threshold

    train, valid = rows
    calibrated, spec = _calibrated(project, train, valid, "logistic_regression", "isotonic")
    features = valid[list(spec.features)]
    python = calibrated.predict_proba(features)[:, 1]
    threshold, _ = choose_threshold(labels(valid, project.params.data), python)

    class RoundingRuntime:
        def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
            return calibrated.predict_proba(frame) + np.array([1e-7, -1e-7])

    chosen = python[python >= threshold].min()
    assert np.sum(python == chosen) > 1  # an isotonic plateau at the cut
    parity = check_parity(calibrated, RoundingRuntime(), features, threshold)
    assert parity.passed and parity.decisions_differ == 0, parity.message
    on_the_score = check_parity(calibrated, RoundingRuntime(), features, float(chosen))
    assert on_the_score.decisions_differ == np.sum(python == chosen)  # what a cut on the score itself did


def test_an_ensemble_of_calibrators_is_averaged_as_sklearn_does(project: Config, rows) -> None:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    train, valid = rows
    model, spec = _fit(project, train, "logistic_regression")
    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method="sigmoid", cv=3, ensemble=True)
    calibrated.fit(valid[list(spec.features)], labels(valid, project.params.data))
    assert len(calibrated.calibrated_classifiers_) == 3
    _assert_parity(export_checked(calibrated, spec, valid), calibrated, spec, valid, 1e-12)


def test_an_unsupported_calibration_is_not_exported_and_says_why(project: Config, rows) -> None:
    """Temperature scaling has no exported map: no graph, the Python model serves, the reason is recorded."""
    train, valid = rows
    calibrated, spec = _calibrated(project, train, valid, "logistic_regression", "temperature")
    exported = export_checked(calibrated, spec, valid)
    assert exported.model is None and not exported.parity.passed
    assert "a CalibratedClassifierCV the export does not cover" in exported.parity.message
    assert "method 'temperature' (sigmoid and isotonic are exported)" in exported.parity.message
