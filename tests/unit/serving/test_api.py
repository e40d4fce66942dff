"""The online API on a real uvicorn (127.0.0.1, in this process) over a small registered model: answers match batch
scoring, concurrent requests share batches, bad input gets clear 400/413/422, and a moved champion is picked up."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from mlflow import MlflowClient

from optiflow.config import Config, load_config
from optiflow.release.registry import connect, load_registered
from optiflow.serving.api import ClientRateLimiter, create_app, one_native_thread
from tests.registered import register_model, registry_project, typed_frame

NAME = "optiflow-churn"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, churn_sample: pd.DataFrame) -> Config:
    config = registry_project(tmp_path_factory.mktemp("serving"), churn_sample)
    version = register_model(config, typed_frame(config, churn_sample))
    MlflowClient().set_registered_model_alias(NAME, "champion", version)
    return config


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _running(config: Config) -> Iterator[str]:
    """A real uvicorn server on a free 127.0.0.1 port, stopped on exit."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=_free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def api(project: Config) -> Iterator[str]:
    """A real server with a long batching window, so concurrent requests reliably meet in one batch."""
    config = load_config(
        project.root / "params.yaml",
        {
            "serve.max_wait_ms": 200,
            "serve.max_batch_size": 32,
            "serve.max_body_bytes": 20_000,
            "serve.reload_seconds": 0.2,
            "serve.cache": True,
        },
    )
    with _running(config) as url:
        yield url


def _rows(sample: pd.DataFrame, n: int) -> list[dict]:
    return json.loads(sample.drop(columns=["churn"]).head(n).to_json(orient="records"))


def test_answers_match_the_registered_model_with_reasons_and_metadata(
    api: str, project: Config, churn_sample: pd.DataFrame
) -> None:
    rows = _rows(churn_sample, 5)
    answer = httpx.post(f"{api}/predict", json={"rows": rows, "reasons": True}, timeout=30).json()
    connect(project)
    loaded = load_registered(NAME, alias="champion")
    frame = typed_frame(project, churn_sample.head(5))[list(loaded.spec.features)]
    expected = loaded.model.predict_proba(frame)[:, 1]
    np.testing.assert_allclose([p["probability"] for p in answer["predictions"]], expected, rtol=0, atol=1e-12)
    assert [p["label"] for p in answer["predictions"]] == np.where(expected >= 0.4, "Yes", "No").tolist()
    assert all(set(p["reasons"]) <= set(loaded.spec.features) for p in answer["predictions"])
    assert answer["model_version"] == "1"
    hits = httpx.get(f"{api}/metrics").json()["cache_hits"]
    again = httpx.post(f"{api}/predict", json={"rows": rows, "reasons": True}, timeout=30).json()
    assert again == answer and httpx.get(f"{api}/metrics").json()["cache_hits"] == hits + 5
    metadata = httpx.get(f"{api}/metadata").json()
    assert (metadata["model_name"], metadata["alias"], metadata["threshold"]) == (NAME, "champion", 0.4)
    assert metadata["device"] == "cpu" and metadata["features"] == list(loaded.spec.features)
    assert metadata["runtime"] == "python"  # registered without an ONNX export
    assert httpx.get(f"{api}/health").json() == {"status": "ok", "model_version": "1"}


def test_concurrent_requests_are_scored_in_shared_batches(api: str, churn_sample: pd.DataFrame) -> None:
    rows = _rows(churn_sample, 24)

    rows[5] = {**rows[5], "contract": "Weekly"}  # one bad request must not spoil its batch

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.post(f"{api}/predict", json={"rows": [row]}) for row in rows))

    before = httpx.get(f"{api}/metrics").json()
    answers = asyncio.run(burst())
    assert [answer.status_code for answer in answers] == [200] * 5 + [422] + [200] * 18
    after = httpx.get(f"{api}/metrics").json()
    assert answers[7].json() == httpx.post(f"{api}/predict", json={"rows": [rows[7]]}).json()
    assert after["requests"] - before["requests"] == 24
    assert after["batches"] - before["batches"] < 24  # some requests shared a predict call
    assert after["max_requests_per_batch"] > 1


def test_bad_requests_get_clear_errors(api: str, churn_sample: pd.DataFrame) -> None:
    row = _rows(churn_sample, 1)[0]
    malformed = httpx.post(f"{api}/predict", content=b'{"rows": [', headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["detail"].startswith("malformed JSON")
    wrong_type = httpx.post(f"{api}/predict", json={"rows": [row, {**row, "tenure": "ten"}]})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["detail"][0]["field"] == "rows[1].tenure"
    missing = httpx.post(f"{api}/predict", json={"rows": [{k: v for k, v in row.items() if k != "contract"}]})
    assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "rows[0].contract"
    rule = httpx.post(f"{api}/predict", json={"rows": [{**row, "contract": "Weekly"}]})
    assert rule.status_code == 422
    assert rule.json()["detail"] == [{"loc": ["rows", 0], "msg": "contract: 'Weekly' not in the allowed values"}]
    oversize = httpx.post(f"{api}/predict", json={"rows": [row] * 100})
    assert oversize.status_code == 413 and "serve.max_body_bytes = 20000" in oversize.json()["detail"]


def test_a_new_champion_is_picked_up_without_restart(api: str, project: Config, churn_sample: pd.DataFrame) -> None:
    rows = _rows(churn_sample, 3)
    first = httpx.post(f"{api}/predict", json={"rows": rows}).json()
    connect(project)
    newer = register_model(project, typed_frame(project, churn_sample), family="hist_gradient_boosting", max_iter=20)
    MlflowClient().set_registered_model_alias(NAME, "champion", newer)
    deadline = time.monotonic() + 60
    while httpx.get(f"{api}/health").json()["model_version"] != newer:
        assert time.monotonic() < deadline, "the server did not pick up the new champion"
        time.sleep(0.05)  # the server polls the registry every 0.2 s (serve.reload_seconds); nothing to wait on here
    second = httpx.post(f"{api}/predict", json={"rows": rows}).json()
    assert second["model_version"] == newer
    assert second["predictions"] != first["predictions"]
    assert httpx.get(f"{api}/metrics").json()["reloads"] == 1
    MlflowClient().set_registered_model_alias(NAME, "champion", "1")


def test_token_bucket_limits_each_client_and_refills_over_time() -> None:
    now = [0.0]
    limiter = ClientRateLimiter(per_minute=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.allow("a") == pytest.approx(20.0)  # one token per 20 s at 3 per minute
    assert limiter.allow("b") == 0.0  # other clients have their own bucket
    now[0] = 20.0
    assert limiter.allow("a") == 0.0
    assert limiter.allow("a") > 0.0


def test_rate_limit_per_client_and_rounded_probabilities(project: Config, churn_sample: pd.DataFrame) -> None:
    """The model-extraction mitigations of docs/security.md: a client past its limit gets 429 with Retry-After
    (another API key still gets answers), and returned probabilities are rounded while labels stay the same."""
    config = load_config(
        project.root / "params.yaml", {"serve.rate_limit_per_minute": 2, "serve.probability_decimals": 2}
    )
    rows = _rows(churn_sample, 5)
    connect(config)
    expected = load_registered(NAME, alias="champion")
    with _running(config) as url:
        first = httpx.post(f"{url}/predict", json={"rows": rows}, headers={"x-api-key": "one"})
        assert httpx.post(f"{url}/predict", json={"rows": rows}, headers={"x-api-key": "one"}).status_code == 200
        limited = httpx.post(f"{url}/predict", json={"rows": rows}, headers={"x-api-key": "one"})
        other = httpx.post(f"{url}/predict", json={"rows": rows}, headers={"x-api-key": "two"})
    assert first.status_code == 200 and other.status_code == 200
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "2 requests per minute" in limited.json()["detail"]
    frame = typed_frame(config, churn_sample.head(5))[list(expected.spec.features)]
    exact = expected.model.predict_proba(frame)[:, 1]
    answers = first.json()["predictions"]
    assert [a["probability"] for a in answers] == [round(p, 2) for p in exact.tolist()]
    assert [a["label"] for a in answers] == np.where(exact >= expected.spec.threshold, "Yes", "No").tolist()


def test_a_parity_checked_champion_answers_from_onnx_runtime_like_the_python_model(
    tmp_path_factory: pytest.TempPathFactory, churn_sample: pd.DataFrame
) -> None:
    config = registry_project(tmp_path_factory.mktemp("serving-onnx"), churn_sample)
    typed = typed_frame(config, churn_sample)
    version = register_model(config, typed, "hist_gradient_boosting", parity_rows=typed.sample(300, random_state=2))
    MlflowClient().set_registered_model_alias(NAME, "champion", version)
    rows = _rows(churn_sample, 8)
    with _running(config) as url:
        answer = httpx.post(f"{url}/predict", json={"rows": rows}, timeout=30).json()
        assert httpx.get(f"{url}/metadata").json()["runtime"] == "onnx"
        assert gc.get_freeze_count() > 0  # the startup heap is out of the collector's sight
    python = load_registered(NAME, alias="champion", runtime="python")
    expected = python.model.predict_proba(typed_frame(config, churn_sample.head(8))[list(python.spec.features)])[:, 1]
    np.testing.assert_allclose([p["probability"] for p in answer["predictions"]], expected, rtol=0, atol=1e-5)


def test_the_scoring_thread_runs_native_pools_on_one_thread() -> None:
    from threadpoolctl import threadpool_info

    seen: list[dict] = []
    worker = threading.Thread(target=lambda: (one_native_thread(), seen.extend(threadpool_info())))
    worker.start()
    worker.join()
    assert seen and all(pool["num_threads"] == 1 for pool in seen), seen
