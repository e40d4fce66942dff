"""Registered model files are verified before loading: a changed file, a missing checksum record or a file with types
outside Optiflow's allowlist is refused with IntegrityError (and MLflow's pickle-capable loaders are never used)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from mlflow import MlflowClient
from sklearn.neighbors import KNeighborsClassifier

from optiflow.config import load_config
from optiflow.errors import IntegrityError
from optiflow.io import read_json, read_parquet, sha256_file, write_json
from optiflow.modeling.candidates import META_FILE, MODEL_FILE, load_candidate
from optiflow.release.pyfunc_model import CANDIDATE, DIGEST_FILE, MODEL_DATA
from optiflow.release.registry import ARTIFACTS_TAG, connect, load_registered

NAME = "optiflow-churn"


def _stored_candidate(root: Path) -> Path:
    """The registered version's candidate folder in the artifact store."""
    (path,) = [p.parent for p in (root / "mlartifacts").rglob(MODEL_FILE) if p.parent.name == CANDIDATE]
    return path


def _record(version: str = "1") -> dict[str, str]:
    return json.loads(MlflowClient().get_model_version(NAME, version).tags[ARTIFACTS_TAG])


def test_registered_model_loads_verified_and_predicts_like_the_candidate(trained_copy: Path) -> None:
    config = load_config(trained_copy)
    connect(config)
    loaded = load_registered(NAME, version="1")
    candidate, _ = load_candidate(config.path("selected"))  # the calibrated model evaluate chose
    test = read_parquet(config.path("test")).drop(columns=["churn"])
    np.testing.assert_allclose(loaded.model.predict_proba(test), candidate.predict_proba(test))
    stored = _stored_candidate(trained_copy.parent)
    assert _record()[f"data/{MODEL_DATA}/{CANDIDATE}/{MODEL_FILE}"] == sha256_file(stored / MODEL_FILE)


def test_tampered_registered_model_is_refused(trained_copy: Path) -> None:
    connect(load_config(trained_copy))
    path = _stored_candidate(trained_copy.parent) / MODEL_FILE
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(IntegrityError, match=rf"{CANDIDATE}/{MODEL_FILE}: expected sha256"):
        load_registered(NAME, version="1")


def test_version_without_a_recorded_checksum_is_refused(trained_copy: Path) -> None:
    connect(load_config(trained_copy))
    MlflowClient().delete_model_version_tag(NAME, "1", ARTIFACTS_TAG)
    with pytest.raises(IntegrityError, match=rf"no {ARTIFACTS_TAG} tag"):
        load_registered(NAME, version="1")


def test_swapped_file_with_untrusted_types_is_refused_even_with_matching_checksums(trained_copy: Path) -> None:
    """An attacker who can rewrite the artifact, meta.json and the registry record still cannot get an untrusted
    type loaded: the allowlist is Optiflow's own, not one stored with the model."""
    connect(load_config(trained_copy))
    stored = _stored_candidate(trained_copy.parent)
    knn = KNeighborsClassifier(n_neighbors=1, algorithm="kd_tree").fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    sio.dump(knn, stored / MODEL_FILE)
    meta = read_json(stored / META_FILE)
    write_json(stored / META_FILE, {**meta, "files": {MODEL_FILE: sha256_file(stored / MODEL_FILE)}})
    record = _record()
    digests = read_json(stored.parent / DIGEST_FILE)
    for name in (MODEL_FILE, META_FILE):
        record[f"data/{MODEL_DATA}/{CANDIDATE}/{name}"] = digests[f"{CANDIDATE}/{name}"] = sha256_file(stored / name)
    write_json(stored.parent / DIGEST_FILE, digests)
    record[f"data/{MODEL_DATA}/{DIGEST_FILE}"] = sha256_file(stored.parent / DIGEST_FILE)
    MlflowClient().set_model_version_tag(NAME, "1", ARTIFACTS_TAG, json.dumps(record))
    with pytest.raises(IntegrityError, match=r"untrusted types .*KDTree"):
        load_registered(NAME, version="1")


def _model_folder(root: Path) -> Path:
    """The registered version's model folder (MLmodel and data/) in the artifact store."""
    return _stored_candidate(root).parents[2]


def test_the_stored_model_holds_no_code_and_names_the_installed_loader(trained_copy: Path) -> None:
    import yaml

    folder = _model_folder(trained_copy.parent)
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "optiflow.release.pyfunc_model" and not flavor.get("code")
    assert flavor["data"] == f"data/{MODEL_DATA}"
    assert not [path for path in folder.rglob("*") if path.suffix in {".py", ".pyc", ".pkl"}]


@pytest.mark.parametrize("change", ["edit", "add"])
def test_mlflow_pyfunc_load_model_refuses_a_tampered_model_before_deserialising(
    trained_copy: Path, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `mlflow models serve` runs: MLflow imports Optiflow's loader, which checks the data files first."""
    import mlflow

    connect(load_config(trained_copy))
    data = _model_folder(trained_copy.parent) / "data" / MODEL_DATA
    if change == "edit":
        path = data / CANDIDATE / MODEL_FILE
        path.write_bytes(path.read_bytes() + b"\0")
        expected = rf"{CANDIDATE}/{MODEL_FILE}: expected sha256"
    else:
        (data / "payload.skops").write_bytes(b"not a model")
        expected = rf"payload.skops: not in {DIGEST_FILE}"

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model file was deserialised before it was verified")

    monkeypatch.setattr("optiflow.release.pyfunc_model.load_candidate", must_not_load)
    with pytest.raises(IntegrityError, match=expected):
        mlflow.pyfunc.load_model(f"models:/{NAME}/1")


def test_a_rewritten_mlmodel_naming_another_loader_is_refused_by_optiflow(trained_copy: Path) -> None:
    """MLflow would import whatever module MLmodel names (the model cannot check that itself); Optiflow's loader
    holds MLmodel to the registry's record before reading it."""
    connect(load_config(trained_copy))
    mlmodel = _model_folder(trained_copy.parent) / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("optiflow.release.pyfunc_model", "attacker.loader"))
    with pytest.raises(IntegrityError, match=r"MLmodel: expected sha256"):
        load_registered(NAME, version="1")


def test_export_model_copies_a_verified_version_that_mlflow_serves_and_refuses_a_tampered_one(
    trained_copy: Path, tmp_path: Path
) -> None:
    """`make serve-mlflow` serves what `optiflow export-model` verified, never models:/ directly."""
    import mlflow

    from optiflow.release.registry import export_verified

    connect(load_config(trained_copy))
    assert export_verified(NAME, tmp_path / "served", alias="champion") == "1"
    model = mlflow.pyfunc.load_model(str(tmp_path / "served"))
    test = read_parquet(load_config(trained_copy).path("test")).drop(columns=["churn"]).head(5)
    assert list(model.predict(test).columns) == ["label", "probability"] and len(model.predict(test)) == 5
    mlmodel = _model_folder(trained_copy.parent) / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("optiflow.release.pyfunc_model", "attacker.loader"))
    with pytest.raises(IntegrityError, match=r"MLmodel: expected sha256"):
        export_verified(NAME, tmp_path / "tampered", alias="champion")
    assert not (tmp_path / "tampered").exists()
