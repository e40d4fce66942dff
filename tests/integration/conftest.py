"""Integration level: real services on 127.0.0.1 (a Prefect API, MLflow, DVC, PostgreSQL), started the way users do,
and ONE tiny project trained per test run by the training flow, which every test needing a trained project copies."""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import copy_trained, make_project


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """One temporary Prefect API for the flow tests that ask for it (starting it costs ~15 s; each flow then ~1 s).

    Task results (the stage cache) go to a fresh folder per session: Prefect reads PREFECT_HOME once at import, so
    without this a second session would find the first one's cache records under the same inputs.
    """
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}), prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def flows_in_processes_reuse_the_session_api(prefect_api: None) -> Iterator[str]:
    """Flows started as processes (`optiflow train` from a shell) report to this session's Prefect API, as they do
    where a server is configured (PREFECT_API_URL), instead of each starting a temporary server of its own (a process
    that only starts one used 8.27 s of CPU on an existing Prefect home, 12.36 s on a fresh one). Tests about that
    temporary server leave this out. Yields the API's URL."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", url)
        yield url


@pytest.fixture(scope="session")
def flow_training(
    prefect_api: None,
    tmp_path_factory: pytest.TempPathFactory,
    churn_sample: pd.DataFrame,
    request: pytest.FixtureRequest,
) -> tuple[Path, list[dict[str, Any]]]:
    """The shipped params on the 1,500-row sample, trained ONCE per test run by the training flow, as `optiflow
    train` does: (its params.yaml, the flow's results). The first pytest-xdist worker to need it trains it in the
    run's shared temporary folder, under a file lock; the others wait for it and read the results it left (a worker
    finds the stages done through their stamps, as after `dvc repro`). Never changed: tests work on copies."""
    from filelock import FileLock

    from flows.training import training

    under_xdist = hasattr(request.config, "workerinput")  # a pytest-xdist worker (absent with -p no:xdist or -n 0)
    run_folder = tmp_path_factory.getbasetemp().parent if under_xdist else tmp_path_factory.getbasetemp()
    project, results_file = run_folder / "trained-project", run_folder / "trained-project.pickle"
    with FileLock(run_folder / "trained-project.lock"):
        if not results_file.exists():
            shutil.rmtree(project, ignore_errors=True)  # what a worker that failed half way left
            project.mkdir()
            results = training(str(make_project(project, churn_sample)))
            partial = results_file.with_suffix(".partial")
            partial.write_bytes(pickle.dumps(results))
            partial.replace(results_file)
    return project / "params.yaml", pickle.loads(results_file.read_bytes())


@pytest.fixture(scope="session")
def trained_project(flow_training: tuple[Path, list[dict[str, Any]]]) -> Path:
    return flow_training[0]


@pytest.fixture
def trained_copy(trained_project: Path, tmp_path: Path) -> Path:
    """A private copy of the session's trained project; returns its params.yaml."""
    return copy_trained(trained_project, tmp_path / "project")
