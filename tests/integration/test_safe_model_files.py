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
from optiflow.release.registry import ARTIFACTS_TAG, CANDIDATE_ARTIFACT, connect, load_registered

NAME = "optiflow-churn"


def _stored_candidate(root: Path) -> Path:
    """The registered version's candidate folder in the artifact store."""
    (path,) = [p.parent for p in (root / "mlartifacts").rglob(MODEL_FILE) if p.parent.name == CANDIDATE_ARTIFACT]
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
    assert _record()[f"artifacts/{CANDIDATE_ARTIFACT}/{MODEL_FILE}"] == sha256_file(stored / MODEL_FILE)


def test_tampered_registered_model_is_refused(trained_copy: Path) -> None:
    connect(load_config(trained_copy))
    path = _stored_candidate(trained_copy.parent) / MODEL_FILE
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(IntegrityError, match=rf"{CANDIDATE_ARTIFACT}/{MODEL_FILE}: expected sha256"):
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
    for name in (MODEL_FILE, META_FILE):
        record[f"artifacts/{CANDIDATE_ARTIFACT}/{name}"] = sha256_file(stored / name)
    MlflowClient().set_model_version_tag(NAME, "1", ARTIFACTS_TAG, json.dumps(record))
    with pytest.raises(IntegrityError, match=r"untrusted types .*KDTree"):
        load_registered(NAME, version="1")
