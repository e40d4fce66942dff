"""`mlflow models serve -m models:/<name>@champion --env-manager local` on the registered pyfunc, over real HTTP: it
answers raw rows with the champion's label and probability, rejects rows breaking the contract with HTTP 400 naming
row, column, rule and value, `mlflow models predict` scores the raw CSV file, and it refuses to start on a tampered
model (MLflow imports Optiflow's installed loader, which checks every data file before anything is deserialised)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from optiflow.release.pyfunc_model import MODEL_DATA
from optiflow.release.registry import load_registered
from tests.registered import register_model, registry_project, typed_frame

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(root: Path, port: int) -> subprocess.Popen:
    # mlflow starts `uvicorn` by name: the venv's bin must be on PATH (the Makefile puts it there)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "PATH": path}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/optiflow-churn@champion"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    return subprocess.Popen(
        command, env=env, cwd=root, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _stop(server: subprocess.Popen) -> str:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    return server.communicate(timeout=30)[0]


def _serve_api(params: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "flows", "serve-api", "--params", str(params), "-S", f"serve.port={port}"]
    return subprocess.Popen(
        command, cwd=params.parent, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_ready(server: subprocess.Popen, url: str, name: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None, f"{name} exited:\n{server.communicate()[0][-3000:]}"
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, f"{name} did not answer within 120 s"
        time.sleep(0.2)


def test_mlflow_models_serve_answers_as_optiflow_serve_api_does(tmp_path: Path, churn_sample: pd.DataFrame) -> None:
    """The same raw rows get the same probabilities and labels from both servers, and the same bad rows are refused
    by both, each naming the same rows and columns: one row contract, inside the model and in serve-api."""
    config = registry_project(tmp_path, churn_sample)
    version = register_model(config, typed_frame(config, churn_sample))
    MlflowClient().set_registered_model_alias("optiflow-churn", "champion", version)
    mlflow_port, api_port = _free_port(), _free_port()
    servers = [_serve(tmp_path, mlflow_port), _serve_api(config.root / "params.yaml", api_port)]
    try:
        _wait_ready(servers[0], f"http://127.0.0.1:{mlflow_port}/ping", "mlflow models serve")
        _wait_ready(servers[1], f"http://127.0.0.1:{api_port}/health", "optiflow serve-api")
        rows = json.loads(churn_sample.head(8).to_json(orient="records"))  # raw rows, the target column included
        answer = httpx.post(f"http://127.0.0.1:{mlflow_port}/invocations", json={"dataframe_records": rows}, timeout=30)
        assert answer.status_code == 200, answer.text
        predictions = pd.DataFrame(answer.json()["predictions"])
        features = [{k: v for k, v in row.items() if k != "churn"} for row in rows]
        served = httpx.post(f"http://127.0.0.1:{api_port}/predict", json={"rows": features}, timeout=30)
        assert served.status_code == 200, served.text
        expected = pd.DataFrame(served.json()["predictions"])
        assert list(predictions.columns) == ["label", "probability"]
        np.testing.assert_allclose(predictions["probability"], expected["probability"], rtol=0, atol=1e-9)
        assert predictions["label"].tolist() == expected["label"].tolist()
        loaded = load_registered("optiflow-churn", alias="champion")
        direct = loaded.model.predict_proba(typed_frame(config, churn_sample.head(8))[list(loaded.spec.features)])
        np.testing.assert_allclose(predictions["probability"], direct[:, 1], rtol=0, atol=1e-9)

        bad = [{**rows[0], "tenure": -5000}, rows[1], {**rows[2], "contract": "Quarterly"}]
        refused = httpx.post(f"http://127.0.0.1:{mlflow_port}/invocations", json={"dataframe_records": bad}, timeout=30)
        assert refused.status_code == 400, refused.text
        message = refused.json()["message"]
        assert "row 0: tenure: -5000.0 outside [0.0, 120.0]" in message
        assert "row 2: contract: 'Quarterly' not in the allowed values" in message
        bad_features = [{k: v for k, v in row.items() if k != "churn"} for row in bad]
        also_refused = httpx.post(f"http://127.0.0.1:{api_port}/predict", json={"rows": bad_features}, timeout=30)
        assert also_refused.status_code == 422, also_refused.text
        rejections = [f"row {problem['loc'][1]}: {problem['msg']}" for problem in also_refused.json()["detail"]]
        contract = message.split("nothing was scored: ", 1)[1].splitlines()[0]
        assert rejections == contract.split("; "), message
    finally:
        for server in servers:
            _stop(server)


def test_mlflow_models_serve_refuses_a_tampered_model(tmp_path: Path, churn_sample: pd.DataFrame) -> None:
    config = registry_project(tmp_path, churn_sample)
    version = register_model(config, typed_frame(config, churn_sample))
    MlflowClient().set_registered_model_alias("optiflow-churn", "champion", version)
    (model_file,) = (tmp_path / "mlartifacts").rglob(f"data/{MODEL_DATA}/candidate/model.skops")
    model_file.write_bytes(model_file.read_bytes()[:-8] + b"\0" * 8)
    port = _free_port()
    server = _serve(tmp_path, port)
    try:
        deadline = time.monotonic() + 120
        while server.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                answer = httpx.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": []}, timeout=2)
                raise AssertionError(f"a tampered model was served: {answer.status_code} {answer.text[:200]}")
            time.sleep(0.5)
    finally:
        output = _stop(server)
    assert "IntegrityError" in output and "candidate/model.skops: expected sha256" in output, output[-3000:]


@pytest.mark.parametrize("content_type", ["csv", "json"])
def test_mlflow_models_predict_scores_the_raw_file(
    tmp_path: Path, churn_sample: pd.DataFrame, content_type: str
) -> None:
    config = registry_project(tmp_path, churn_sample)
    version = register_model(config, typed_frame(config, churn_sample))
    raw = tmp_path / f"raw.{content_type}"
    if content_type == "csv":
        churn_sample.head(20).to_csv(raw, index=False)  # tenure is int64 when read back
    else:  # MLflow's JSON input: split-oriented rows, integers where the values are whole
        raw.write_text(json.dumps({"dataframe_split": json.loads(churn_sample.head(20).to_json(orient="split"))}))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "PATH": path}
    command = [sys.executable, "-m", "mlflow", "models", "predict", "-m", f"models:/optiflow-churn/{version}"]
    command += ["-i", str(raw), "-t", content_type, "-o", str(tmp_path / "out.json")]
    command += ["--env-manager", "local"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    predictions = pd.DataFrame(json.loads((tmp_path / "out.json").read_text())["predictions"])
    loaded = load_registered("optiflow-churn", version=version)
    expected = loaded.model.predict_proba(typed_frame(config, churn_sample.head(20))[list(loaded.spec.features)])
    np.testing.assert_allclose(predictions["probability"], expected[:, 1], rtol=0, atol=1e-9)
