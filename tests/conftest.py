"""Shared fixtures: a quiet, offline environment and small throwaway projects built from the shipped params."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DATA = REPO / "data" / "raw" / "wa_churn.csv.gz"


@pytest.fixture(autouse=True, scope="session")
def _quiet_offline_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No telemetry, Prefect state and matplotlib cache in a temp dir, never a developer's tracking server."""
    home = tmp_path_factory.mktemp("prefect-home")
    patch = pytest.MonkeyPatch()
    for key, value in {
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_HOME": str(home),
        "MPLCONFIGDIR": str(home / "matplotlib"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }.items():
        patch.setenv(key, value)
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    patch.undo()


def shipped_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(scope="session")
def churn_sample() -> pd.DataFrame:
    """A stratified 1,500-row sample of the shipped table: big enough for real metrics, small enough to be quick."""
    frame = pd.read_csv(SHIPPED_DATA)
    return (
        frame.groupby("churn", group_keys=False).sample(frac=1500 / len(frame), random_state=7).reset_index(drop=True)
    )


def make_project(root: Path, frame: pd.DataFrame | None = None, **param_changes) -> Path:
    """A project folder with params.yaml (shipped values plus changes) and the data as CSV; returns params path."""
    params = shipped_params()
    params["data"].pop("sha256")
    params["data"]["source"] = "data/input.csv"
    params["validate"]["min_rows"] = 100
    params["tune"].update(n_trials=3, cv_folds=2, n_jobs=1)
    params["gates"]["min_quality"] = {"roc_auc": 0.75, "pr_auc": 0.45}  # a 1,500-row sample scores a bit lower
    params["explain"].update(max_rows=200, permutation_repeats=2)
    for dotted, value in param_changes.items():
        node = params
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    (root / "data").mkdir(parents=True, exist_ok=True)
    if frame is not None:
        frame.to_csv(root / "data" / "input.csv", index=False)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root / "params.yaml"


@pytest.fixture
def project(tmp_path: Path, churn_sample: pd.DataFrame) -> Path:
    return make_project(tmp_path, churn_sample)


def copy_repo(target: Path) -> Path:
    """The tracked files of this repository (what a fresh clone holds), without outputs or state."""
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, destination)
    return target
