"""A real Prefect server on 127.0.0.1: serve the deployments, start the parametrised training deployment through
the API the UI uses, run the monitoring deployment on a drifted batch, and wait until the training run its drift
event started (through the deployment's trigger) completes. Serve is stopped before the server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from optiflow.config import load_config
from optiflow.data.simulate import simulate
from optiflow.io import read_parquet, write_parquet
from tests.conftest import CLASSICAL_FAMILIES, REPO, make_project

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 600  # seconds a flow run may take on a loaded 2-core machine
POLL_SECONDS = 1  # how often serve looks for new runs and this test for their end


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = open(home / "server.log", "w")  # noqa: SIM115 - open for the life of the server
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prefect server not healthy after 120 s"
            time.sleep(0.25)
        yield env
    finally:
        _stop(process)
        log.close()


@pytest.fixture(scope="module")
def served(server: dict[str, str], tmp_path_factory: pytest.TempPathFactory, churn_sample: pd.DataFrame):
    root = tmp_path_factory.mktemp("served-project")
    params = make_project(
        root,
        churn_sample,
        tune__n_trials=2,
        # the classical families only: this test is about serving, the API and the automation, not the MLP
        train__families=CLASSICAL_FAMILIES,
        split__pool_size=0.2,
        simulate__batch_rows=200,
        monitor__min_new_rows=100,
        monitor__trigger="drift",  # a drifted batch retrains by the drift rule (the performance rule may only alert)
    )
    log = open(root / "serve.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "flows", "serve", "--params", str(params), "--no-schedules"],
        cwd=REPO,
        env={**server, "PREFECT_RUNNER_POLL_FREQUENCY": str(POLL_SECONDS)},  # Prefect's default: a look every 10 s
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield params, process, server["PREFECT_API_URL"]
    finally:
        _stop(process)  # before the server, or serve hangs pausing its deployments
        log.close()


def _wait_for_deployment(name: str, process: subprocess.Popen, log: Path) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            with get_client(sync_client=True) as client:
                client.read_deployment_by_name(name)
                return
        except Exception:
            assert time.monotonic() < deadline, f"deployment {name} not served after 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.25)


def test_served_deployments_train_by_api_and_retrain_on_a_drift_event(served) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    params, process, api = served
    root = params.parent
    with temporary_settings({PREFECT_API_URL: api}):
        _wait_for_deployment("training/training", process, root / "serve.log")
        _wait_for_deployment("monitoring/monitoring", process, root / "serve.log")

        # 1. the parametrised training deployment, started as the UI does (POST create_flow_run_from_deployment)
        first = run_deployment(
            "training/training",
            parameters={"sampler": "random", "n_trials": 1},
            timeout=RUN_TIMEOUT,
            poll_interval=POLL_SECONDS,
        )
        assert first.state.is_completed(), (first.state, (root / "serve.log").read_text()[-4000:])
        assert first.parameters["n_trials"] == 1 and first.parameters["sampler"] == "random"
        assert (root / "reports/registration.json").is_file()

        config = load_config(params)
        pool = read_parquet(config.path("pool"))  # rows no model trains on (split.pool_size)
        for name, frame in simulate(pool, config.params.data, config.params.simulate, config.params.seed):
            write_parquet(config.path("batches") / f"{name}.parquet", frame)

        # 2. monitoring on a drifted batch: with the training deployment served it asks for retraining by event
        monitored = run_deployment(
            "monitoring/monitoring",
            parameters={"batches": "data/batches/002-price_increase.parquet"},
            timeout=RUN_TIMEOUT,
            poll_interval=POLL_SECONDS,
        )
        assert monitored.state.is_completed(), (monitored.state, (root / "serve.log").read_text()[-4000:])
        history = pd.read_csv(root / "reports/monitoring/history.csv")
        assert history.iloc[-1]["decision"] == "retrained" and "requested by event" in history.iloc[-1]["reason"]

        # 3. the automation started a training run with the event's figures as parameters; wait until it is done
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["training"])),
                    flow_run_filter=FlowRunFilter(),
                )
            triggered = [run for run in runs if run.parameters.get("batch_id") == "002-price_increase"]
            if triggered and triggered[0].state is not None and triggered[0].state.is_final():
                break
            assert time.monotonic() < deadline, (
                f"no completed triggered run:\n{(root / 'serve.log').read_text()[-4000:]}"
            )
            time.sleep(0.25)
        (run,) = triggered
        assert run.state.is_completed(), (run.state, (root / "serve.log").read_text()[-4000:])
        assert run.parameters["dataset"] == "data/retraining/002-price_increase.parquet"
        assert float(run.parameters["drift_share"]) == pytest.approx(history.iloc[-1]["drift_share"])
        registration = pd.read_json(root / "reports/registration.json", typ="series")
        assert registration["version"] == "2"
