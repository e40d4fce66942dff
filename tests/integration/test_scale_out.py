"""The scale-out stack for real: PostgreSQL from the Debian packages, MLflow and Prefect servers on it, tuning
shares on 2 Dask worker processes against Optuna on PostgreSQL, and the model registered on the MLflow server.

Random search without pruning is the deterministic case: every trial's point depends only on (seed, trial
number) and its CV score only on that point, so the Dask run must find exactly the trials a single in-memory
worker finds. (TPE's proposals depend on which trials finished first, and the median pruner's decisions too.)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from optiflow.config import load_config
from tests.conftest import REPO, make_project
from tools import stack

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory):
    """`optiflow stack up` on free ports in a temp folder; down and removed afterwards."""
    try:
        stack.postgres_bin()
    except stack.StackError as exc:
        if os.environ.get("CI"):
            raise  # .ci/run installs PostgreSQL: on CI a missing server is a failure, not a skip
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("stack")
    env = {
        "OPTIFLOW_STACK_DIR": str(folder),
        "OPTIFLOW_PG_PORT": str(_free_port()),
        "OPTIFLOW_MLFLOW_PORT": str(_free_port()),
        "OPTIFLOW_PREFECT_PORT": str(_free_port()),
        "OPTIFLOW_PG_PASSWORD": "test-only-secret",
    }
    settings = stack.StackSettings.from_env(REPO, env)
    try:
        exports = stack.up(settings, timeout=180)
        yield settings, exports
    finally:
        stack.down(settings)
        shutil.rmtree(settings.pg_data, ignore_errors=True)


def test_dask_tuning_on_postgres_matches_local_and_registers_on_the_mlflow_server(
    running_stack, tmp_path: Path, churn_sample: pd.DataFrame
) -> None:
    settings, exports = running_stack
    assert "test-only-secret" not in json.dumps({k: v for k, v in exports.items() if k != "PGPASSWORD"})
    params = make_project(
        tmp_path, churn_sample, tune__sampler="random", tune__pruner="none", tune__n_trials=4, tune__cv_folds=2
    )
    env = {
        **os.environ,
        **exports,
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(tmp_path / ".prefect"),
        "OMP_NUM_THREADS": "1",
    }
    storage = exports["OPTIFLOW_TUNE_STORAGE"]
    done = subprocess.run(
        [sys.executable, "-m", "flows", "train", "--task-runner", "dask", "-S", f"tune.storage={storage}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "test-only-secret" not in done.stdout + done.stderr

    # Each family's trials were split over 2 Dask shares (task runs on the Prefect server, itself on PostgreSQL).
    runs = httpx.post(f"{exports['PREFECT_API_URL']}/task_runs/filter", json={"limit": 200}).json()
    families = list(load_config(params).params.train.families)
    shares = sorted(run["name"] for run in runs if run["name"].startswith("run-trial-share-"))
    assert shares == sorted(["run-trial-share-0", "run-trial-share-1"] * len(families))

    # The study lives in PostgreSQL with every trial, none lost.
    import optuna

    from optiflow.modeling.tuning import open_storage

    os.environ["PGPASSWORD"] = exports["PGPASSWORD"]
    try:
        summaries = optuna.get_all_study_summaries(open_storage(storage))
    finally:
        os.environ.pop("PGPASSWORD")
    assert sorted(s.n_trials for s in summaries) == [4] * len(families)

    # The same trials as one local in-memory worker on the same train split and seed (one torch thread, as on the
    # Dask workers: the MLP's float sums depend on the thread count).
    import torch

    from optiflow.data.schema import resolve_schema
    from optiflow.data.split import labels
    from optiflow.io import read_parquet
    from optiflow.modeling.families import with_device
    from optiflow.modeling.tuning import tune_family

    config = load_config(params)
    frame = read_parquet(config.path("train"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    families = with_device(config.params.train.families, config.params.train.device)  # as the tune stage passes them
    for family, base in families.items():
        local = tune_family(
            family,
            config.params.tune.spaces[family],
            frame,
            labels(frame, config.params.data),
            resolve_schema(frame, config.params.data),
            config.params.tune,
            config.params.seed,
            fixed=base,
            progress_bar=False,
        )
        distributed = json.loads((tmp_path / "models" / "tuning" / f"{family}.json").read_text())
        assert distributed["best_params"] == local.best_params
        assert distributed["best_score"] == local.best_score
        assert distributed["study_name"] == local.study_name and distributed["trials_used"] == 4
        trials = pd.read_csv(tmp_path / "models" / "tuning" / f"{family}-trials.csv")
        assert sorted(trials["roc_auc"]) == sorted(row["value"] for row in local.trials)
    torch.set_num_threads(threads)

    # Registered on the MLflow server (backed by PostgreSQL), artifacts in the server's store, champion set.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=exports["MLFLOW_TRACKING_URI"], registry_uri=exports["MLFLOW_TRACKING_URI"])
    model = client.get_registered_model("optiflow-churn")
    assert model.aliases.get("champion") == "1"
    experiment = client.get_experiment_by_name("optiflow")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert any((settings.folder / "mlartifacts").rglob("MLmodel"))


def test_the_prediction_log_runs_on_postgres_as_on_sqlite(running_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """release.prediction_log pointing at PostgreSQL: batched writes, labels joined by entity key, newest label wins."""
    from optiflow.serving.prediction_log import PredictionLog, Record

    _, exports = running_stack
    monkeypatch.setenv("PGPASSWORD", exports["PGPASSWORD"])
    prediction_log = PredictionLog(exports["OPTIFLOW_TUNE_STORAGE"])  # the stack's optuna database: any will do
    records = [
        Record(f"req{i // 2}", i % 2, 1000.0 + i, "1", "champion", True, f"c{i}", 0.1 * (i % 10), int(i % 10 >= 3), 2.5)
        for i in range(40)
    ]
    prediction_log.record(records)
    assert prediction_log.flush() == 40 and prediction_log.flush() == 0
    assert prediction_log.add_labels([("c1", 0), ("c2", 1)]) == 2
    assert prediction_log.add_labels([("c1", 1)]) == 1
    frame = prediction_log.read(since=1001.0)
    prediction_log.close()
    assert len(frame) == 39 and set(frame.columns) >= {"request_id", "row", "entity_key", "probability", "outcome"}
    labelled = frame.dropna(subset=["outcome"]).set_index("entity_key")["outcome"].to_dict()
    assert labelled == {"c1": 1, "c2": 1}
