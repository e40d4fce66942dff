"""Registered model files are verified before loading: a changed file, a missing checksum or a file with types
outside Optiflow's allowlist is refused with IntegrityError (and MLflow's pickle-capable loaders are never used)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from mlflow import MlflowClient
from sklearn.neighbors import KNeighborsClassifier

from optiflow.config import load_config
from optiflow.errors import IntegrityError
from optiflow.io import read_json, read_parquet, sha256_file
from optiflow.models import MODEL_FILE, load_candidate
from optiflow.registry import MODEL_SHA256_TAG, connect, load_registered_model

NAME = "optiflow-churn"


def _registered_file(root: Path) -> Path:
    (path,) = [p for p in (root / "mlartifacts").rglob(MODEL_FILE)]
    return path


def test_registered_model_loads_verified_and_predicts_like_the_candidate(trained_copy: Path) -> None:
    config = load_config(trained_copy)
    connect(config)
    model = load_registered_model(NAME, "1")
    candidate, _ = load_candidate(config.path("candidates") / read_json(config.path("metrics"))["selected"])
    test = read_parquet(config.path("test")).drop(columns=["churn"])
    np.testing.assert_allclose(model.predict_proba(test), candidate.predict_proba(test))
    tag = MlflowClient().get_model_version(NAME, "1").tags[MODEL_SHA256_TAG]
    assert tag == sha256_file(_registered_file(trained_copy.parent))


def test_tampered_registered_model_is_refused(trained_copy: Path) -> None:
    connect(load_config(trained_copy))
    path = _registered_file(trained_copy.parent)
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(IntegrityError, match="was changed or replaced"):
        load_registered_model(NAME, "1")


def test_version_without_a_recorded_checksum_is_refused(trained_copy: Path) -> None:
    connect(load_config(trained_copy))
    MlflowClient().delete_model_version_tag(NAME, "1", MODEL_SHA256_TAG)
    with pytest.raises(IntegrityError, match=r"no model\.sha256 tag"):
        load_registered_model(NAME, "1")


def test_swapped_file_with_untrusted_types_is_refused_even_with_a_matching_checksum(trained_copy: Path) -> None:
    """An attacker who can write the artifact and the tag still cannot get an untrusted type loaded: the allowlist
    is Optiflow's own, not the one stored in the model's MLmodel file."""
    connect(load_config(trained_copy))
    path = _registered_file(trained_copy.parent)
    knn = KNeighborsClassifier(n_neighbors=1, algorithm="kd_tree").fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    sio.dump(knn, path)
    MlflowClient().set_model_version_tag(NAME, "1", MODEL_SHA256_TAG, sha256_file(path))
    with pytest.raises(IntegrityError, match=r"untrusted types .*KDTree"):
        load_registered_model(NAME, "1")
