"""train.device reaches the training of the PyTorch family (tune and train), is refused with a clear error when CUDA
is asked for and absent (before any fit), and is recorded with each candidate. No GPU here: CUDA is monkeypatched."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from optiflow.config import load_config
from optiflow.errors import ConfigError
from optiflow.io import read_json, write_parquet
from optiflow.modeling import mlp
from optiflow.modeling.families import with_device
from tasks.train import train
from tests.conftest import make_project

FAMILIES = {
    "logistic_regression": {},
    "mlp": {"hidden_units": 4, "hidden_layers": 1, "max_epochs": 2, "batch_size": 128},
}


def _project(tmp_path: Path, churn_sample: pd.DataFrame, device: str):
    config = load_config(make_project(tmp_path, churn_sample, train__families=FAMILIES, train__device=device))
    write_parquet(config.path("train"), churn_sample.sample(300, random_state=0))
    return config


def test_cuda_asked_for_and_absent_stops_before_any_fit(
    tmp_path: Path, churn_sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fits: list[str] = []
    monkeypatch.setattr(mlp, "fit_network", lambda *args, **kwargs: fits.append("fit") or 1)
    with pytest.raises(ConfigError, match=r"train\.device is 'cuda' but torch sees no CUDA device"):
        train.fn(_project(tmp_path, churn_sample, "cuda"))
    assert fits == [] and not (tmp_path / "models" / "candidates").exists()


@pytest.mark.parametrize("device", ["cuda", "cpu"])  # cpu while a GPU is there: the setting wins over "auto"
def test_the_configured_device_trains_the_mlp_and_is_recorded(
    tmp_path: Path, churn_sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    devices: list[str] = []
    real_fit = mlp.fit_network

    def on_cpu_really(network, X, targets, stratify, settings, loss, seed, device="cpu"):
        devices.append(device)  # the device asked for; the fit itself runs on the CPU this machine has
        return real_fit(network, X, targets, stratify, settings, loss, seed, "cpu")

    monkeypatch.setattr(mlp, "fit_network", on_cpu_really)
    config = _project(tmp_path, churn_sample, device)
    train.fn(config)
    assert devices == [device]
    assert read_json(config.path("candidates") / "mlp" / "meta.json")["device"] == device
    assert read_json(config.path("candidates") / "logistic_regression" / "meta.json")["device"] == "cpu"
    assert with_device(FAMILIES, "cpu") == {"logistic_regression": {}, "mlp": {**FAMILIES["mlp"], "device": "cpu"}}
