"""Shared by every level (unit, data, model, integration): a quiet, offline environment, the shipped params and data,
and small throwaway projects built from them. Each test gets its level's marker from the folder it lives in (select
with `-m`); the fast level, `make test-fast`, names the folders (tests/unit, tests/data, tests/model) so that the
integration modules are not even imported."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
LEVELS = ("unit", "data", "model", "integration")


# The files that run longest (minutes each: the pipeline end to end), longest first (durations of a full run on 2
# workers), started first so that on pytest-xdist workers (`--dist loadfile`: one file per worker at a time) the many
# short files fill the end instead of one worker running a long file alone while the other waits. The Makefile passes
# --no-loadscope-reorder: xdist otherwise re-sorts the files by their number of tests, and this order is lost.
LONGEST_FIRST = (
    "integration/test_dvc_repro.py",
    "integration/test_faults.py",
    "integration/test_scale_out.py",
    "integration/test_concurrent_runs.py",
    "integration/test_own_tables.py",
    "integration/test_prefect_server.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        level = Path(item.path).relative_to(REPO / "tests").parts[0]
        if level in LEVELS:
            item.add_marker(getattr(pytest.mark, level))

    def start(item: pytest.Item) -> tuple[int, bool]:
        name = Path(item.path).relative_to(REPO / "tests").as_posix()
        rank = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return rank, item.get_closest_marker("integration") is None  # then the other integration files

    items.sort(key=start)  # stable: the order within a file is kept


SHIPPED_DATA = REPO / "data" / "raw" / "wa_churn.csv.gz"
# train.families without the MLP, for tests about something else than the families (its tuning, compression and
# export are a quarter to a third of a small training)
CLASSICAL_FAMILIES = {"logistic_regression": {"C": 1.0}, "hist_gradient_boosting": {"max_iter": 100}}


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
        "OMP_NUM_THREADS": "1",  # subprocesses too: see below
    }.items():
        patch.setenv(key, value)
    # Native thread pools (OpenMP for gradient boosting, BLAS) on one thread: results are the same, and on a busy
    # 2-core machine a team of threads waits at its barriers for cores (a 20 s gradient-boosting fit took 2 s).
    limits = threadpool_limits(limits=1)
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key in list(os.environ):  # a developer's runtime settings (OPTIFLOW_SERVE__PORT, ...) must not reach the tests
        if key.startswith("OPTIFLOW_") and "__" in key:
            patch.delenv(key)
    yield
    limits.restore_original_limits()
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
    """A project folder with params.yaml (shipped values plus changes) and the data as CSV; returns params path.
    ``group__key=value`` sets params.yaml keys (a group params.yaml leaves to the schema defaults is added); keys of
    a runtime group go to runtime.yaml."""
    params = shipped_params()
    params["data"].pop("sha256", None)
    params["data"]["source"] = "data/input.csv"
    changes = {
        "validate__min_rows": 100,
        "tune__n_trials": 3,
        "tune__cv_folds": 2,
        "tune__n_jobs": 1,
        "gates__min_quality": {"roc_auc": 0.75, "pr_auc": 0.45},  # a 1,500-row sample scores a bit lower
        # its test split has about 30 churners per sex: a TPR gap of 0.3 between them is within sampling noise
        "fairness__max_equalized_odds_difference": 0.4,
        # its 225-row test split holds about 35 senior citizens, under fairness.min_group_size: that gate cannot
        # judge them
        "gates__allow_not_evaluated": ["fairness"],
        "explain__max_rows": 200,
        "explain__permutation_repeats": 2,
        **param_changes,
    }
    for dotted, value in changes.items():
        node = params
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    (root / "data").mkdir(parents=True, exist_ok=True)
    if frame is not None:
        frame.to_csv(root / "data" / "input.csv", index=False)
    from optiflow.config import RUNTIME_FILE, RUNTIME_GROUPS

    runtime = {group: params.pop(group) for group in RUNTIME_GROUPS if group in params}
    if runtime:  # runtime settings never go in params.yaml
        (root / RUNTIME_FILE).write_text(yaml.safe_dump(runtime, sort_keys=False))
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


def copy_trained(params: Path, target: Path) -> Path:
    """A private copy of a trained project (outputs, Prefect stage stamps, registry database and model artifacts)
    at ``target``; returns its params.yaml."""
    root = Path(shutil.copytree(params.parent, target, symlinks=True))
    _repoint_mlflow_store(root / "mlflow.db", params.parent, root)
    return root / params.name


def _repoint_mlflow_store(database: Path, old_root: Path, new_root: Path) -> None:
    """MLflow stores absolute artifact locations; point the copy's at its own mlartifacts, not the original's."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in connection.execute(f'PRAGMA table_info("{table}")').fetchall():
                if column[2].upper().startswith(("VARCHAR", "TEXT")):
                    connection.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?)',
                        (str(old_root.resolve()), str(new_root.resolve())),
                    )


# Inputs a test writes on purpose, the report of rejected data and the (empty) lock files: everything else is an output
# that must not move.
NOT_OUTPUTS = (
    "data/input", "data/bad", "params", "reports/validation-failures", ".optiflow-registry.lock",
    ".optiflow-training.lock",
)  # fmt: skip


def output_digests(root: Path, skip: tuple[str, ...] = NOT_OUTPUTS) -> dict[str, str]:
    """sha256 of every file under the project (outputs, dvc.lock, mlflow.db, model artifacts) but the inputs."""
    import hashlib

    digests = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not relative.startswith(skip):
            digests[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def registry_state(params_path: Path) -> dict[str, object]:
    """Registered versions, aliases and run count of the project's MLflow store."""
    from mlflow import MlflowClient

    from optiflow.config import load_config
    from optiflow.release.registry import connect

    config = load_config(params_path)
    connect(config)
    client = MlflowClient()
    name = config.params.registry.model_name
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()} if versions else {}
    experiment = client.get_experiment_by_name(config.params.tracking.experiment)
    runs = len(client.search_runs([experiment.experiment_id], max_results=1000)) if experiment else 0
    return {"versions": versions, "aliases": aliases, "runs": runs}
