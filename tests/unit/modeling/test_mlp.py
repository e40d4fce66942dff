"""The PyTorch MLP family: learns, is seeded, weights classes, stops early, picks its device, saves without pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import torch
from sklearn.metrics import roc_auc_score

from optiflow.data.schema import Schema
from optiflow.errors import ConfigError, IntegrityError
from optiflow.modeling.candidates import TRUSTED_TYPES, load_candidate, save_candidate
from optiflow.modeling.families import build_pipeline, check_hyperparameters
from optiflow.modeling.mlp import TorchMLPClassifier, load_network, resolve_device, save_network

SCHEMA = Schema(numeric=("tenure", "charges"), categorical=("contract",))
FAST = {"hidden_units": 16, "max_epochs": 30, "patience": 5, "batch_size": 64}


def _matrix(rows: int = 400, positives: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 5)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > np.quantile(X[:, 0] + 0.5 * X[:, 1], 1 - positives)).astype(int)
    return X, y


def _frame(rows: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, rows).astype(float),
            "charges": rng.normal(60, 20, rows),
            "contract": rng.choice(["monthly", "yearly"], rows),
        }
    )
    y = ((frame["contract"] == "monthly") & (frame["tenure"] < 30)).astype(int).to_numpy()
    return frame, y


def test_learns_a_separable_problem_and_returns_probabilities() -> None:
    X, y = _matrix()
    model = TorchMLPClassifier(**FAST, random_state=0).fit(X[:300], y[:300])
    probabilities = model.predict_proba(X[300:])
    assert probabilities.shape == (100, 2) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert roc_auc_score(y[300:], probabilities[:, 1]) > 0.95
    assert set(model.predict(X[300:])) <= {0, 1}


def test_scoring_refuses_missing_or_infinite_values_whatever_the_input_type() -> None:
    X, y = _matrix()
    model = TorchMLPClassifier(**FAST, random_state=0).fit(X, y)
    assert np.array_equal(model.predict_proba(X), model.predict_proba(X.astype(np.float64)))
    for bad in (np.nan, np.inf):
        broken = X[:10].copy()
        broken[3, 2] = bad
        for rows in (broken, broken.astype(np.float64), pd.DataFrame(broken)):
            with pytest.raises(ValueError, match=r"Input contains (NaN|infinity)"):
                model.predict_proba(rows)
    with pytest.raises(ValueError, match="0 sample"):
        model.predict_proba(X[:0])


def test_same_seed_same_model_other_seed_other_model() -> None:
    X, y = _matrix()
    first = TorchMLPClassifier(**FAST, random_state=3).fit(X, y).predict_proba(X)
    again = TorchMLPClassifier(**FAST, random_state=3).fit(X, y).predict_proba(X)
    other = TorchMLPClassifier(**FAST, random_state=4).fit(X, y).predict_proba(X)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_balanced_class_weight_raises_the_minority_scores() -> None:
    X, y = _matrix(positives=0.1)
    plain = TorchMLPClassifier(**FAST, random_state=0).fit(X, y).predict_proba(X)[:, 1]
    balanced = TorchMLPClassifier(**FAST, class_weight="balanced", random_state=0).fit(X, y).predict_proba(X)[:, 1]
    assert balanced.mean() > plain.mean() + 0.1


def test_early_stopping_ends_before_max_epochs_on_noise() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 5)).astype(np.float32), rng.integers(0, 2, 300)
    model = TorchMLPClassifier(hidden_units=64, max_epochs=200, patience=3, learning_rate=0.01, random_state=0)
    model.fit(X, y)
    assert model.epochs_ < 200 - 3


def test_device_auto_follows_cuda_and_cuda_without_a_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cpu") == "cpu"


def test_pipeline_passes_device_and_seed_and_hyperparameters_are_validated() -> None:
    model = build_pipeline("mlp", {"hidden_units": 8}, SCHEMA, seed=11, device="cpu")
    assert model[-1].device == "cpu" and model[-1].random_state == 11 and model[-1].hidden_units == 8
    with pytest.raises(ValueError, match=r"mlp: .*hidden_units"):
        check_hyperparameters("mlp", {"hidden_units": 0})
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        check_hyperparameters("mlp", {"layers": 3})


def test_candidate_round_trip_gives_identical_predictions_and_checks_every_file(tmp_path: Path) -> None:
    frame, y = _frame()
    model = build_pipeline("mlp", FAST, SCHEMA, seed=0, device="cpu").fit(frame, y)
    meta = save_candidate(tmp_path / "mlp", model, {"family": "mlp"})
    assert sorted(meta["files"]) == ["network.json", "network.pt", "preprocess.skops"]
    loaded, _ = load_candidate(tmp_path / "mlp")
    assert np.array_equal(loaded.predict_proba(frame), model.predict_proba(frame))
    state = tmp_path / "mlp" / "network.pt"
    state.write_bytes(state.read_bytes()[:-4] + b"0000")
    with pytest.raises(IntegrityError, match=r"network.pt: sha256 .* does not match"):
        load_candidate(tmp_path / "mlp")


class _NotAWeight:
    pass


def test_network_file_loads_weights_only_never_arbitrary_objects(tmp_path: Path) -> None:
    X, y = _matrix()
    save_network(TorchMLPClassifier(**FAST, random_state=0).fit(X, y), tmp_path)
    torch.save({"payload": _NotAWeight()}, tmp_path / "network.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        load_network(tmp_path)


def test_whole_pipeline_round_trips_through_skops_for_mlflow() -> None:
    """MLflow's sklearn flavour saves with skops: the network travels as state-dict bytes, read back weights-only."""
    frame, y = _frame()
    model = build_pipeline("mlp", FAST, SCHEMA, seed=0, device="cpu").fit(frame, y)
    payload = sio.dumps(model)
    assert set(sio.get_untrusted_types(data=payload)) <= set(TRUSTED_TYPES)
    loaded = sio.loads(payload, trusted=list(TRUSTED_TYPES))
    assert np.array_equal(loaded.predict_proba(frame), model.predict_proba(frame))


def test_saving_the_same_network_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    """Stable bytes keep DVC hashes and Prefect cache keys stable when a retrain reproduces the model."""
    X, y = _matrix()
    model = TorchMLPClassifier(**FAST, random_state=0).fit(X, y)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save_network(model, tmp_path / "a")
    save_network(model, tmp_path / "b")
    for name in ("network.pt", "network.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
