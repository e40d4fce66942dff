"""The release flow on a real (temporary) Prefect API and a real registry: a release waiting for approval is promoted
when approved through the API the Prefect UI uses, and not when rejected or left to time out; a degraded canary is
aborted; a champion a release promoted is rolled back when it degrades; and the notification automations POST each
event once to a webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.release import release
from optiflow.config import Config, load_config
from optiflow.io import read_json
from optiflow.release.registry import PROMOTION_TAG, champion_version, connect
from optiflow.release.rollout import start_release
from optiflow.serving.prediction_log import CHAMPION, PredictionLog, log_url
from tests.conftest import make_project
from tests.prediction_logs import synthetic_log, write_log

pytestmark = pytest.mark.usefixtures("prefect_api")

NAME = "optiflow-churn"
RELEASE_SETTINGS = {"release__min_rows": 500, "release__min_labelled_rows": 300}


def _project(root: Path, sample: pd.DataFrame, **release: Any) -> Config:
    """A project whose registry holds champion v1 and a v2 that passed its gates, without fitting anything: the
    release flow reads the registry and the prediction log only."""
    config = load_config(make_project(root, sample, **RELEASE_SETTINGS, **release))
    connect(config)
    client = MlflowClient()
    client.create_registered_model(NAME)
    for _ in range(2):
        client.create_model_version(NAME, source=str(root), tags={PROMOTION_TAG: "promoted"})
    client.set_registered_model_alias(NAME, "champion", "1")
    return config


def _log(config: Config, frame: pd.DataFrame) -> None:
    prediction_log = PredictionLog(log_url(config))
    write_log(prediction_log, frame)
    prediction_log.close()


def _api() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value().rstrip("/")


def _paused_release_run(started: float) -> str:
    """The id of the release flow run that paused after ``started``, polled as the UI lists runs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}, "sort": "START_TIME_DESC", "limit": 5}
        runs = httpx.post(f"{_api()}/flow_runs/filter", json=body, timeout=10).json()
        fresh = [run for run in runs if run["start_time"] and _epoch(run["start_time"]) >= started - 5]
        if fresh:
            return fresh[0]["id"]
        time.sleep(0.5)
    raise AssertionError("no release flow run paused within 120 s")


def _post_as_a_prefect_client(url: str, body: dict) -> httpx.Response:
    """POST, retrying a 503 as Prefect's own clients do: its server on SQLite answers 503 while another write holds
    the database ("database is locked", PrefectHQ/prefect#18934)."""
    for wait in (0.5, 1, 2, 4, 8):
        response = httpx.post(url, json=body, timeout=10)
        if response.status_code != 503:
            break
        time.sleep(wait)
    return response


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _run_in_thread(params: Path) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def target() -> None:
        result["state"] = release(str(params), return_state=True)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


@pytest.mark.parametrize("approve", [True, False])
def test_an_approval_resumed_through_the_api_promotes_and_a_rejection_does_not(
    approve: bool, tmp_path: Path, churn_sample: pd.DataFrame
) -> None:
    config = _project(tmp_path, churn_sample, release__approval="approve", release__approval_timeout_hours=0.1)
    state = start_release(NAME, "champion", "challenger", "2", "shadow", 0.0, time.time() - 60)
    _log(config, synthetic_log(1500, 1.5, 2.0, labelled=1200, at=time.time() - 30))
    started = time.time()
    thread, result = _run_in_thread(config.root / "params.yaml")
    run_id = _paused_release_run(started)
    answer = {"approve": approve, "reviewer": "alice", "comment": "checked the comparison"}
    response = _post_as_a_prefect_client(f"{_api()}/flow_runs/{run_id}/resume", {"run_input": answer})
    assert response.status_code in (200, 201) and response.json()["status"] == "ACCEPT", response.text
    thread.join(timeout=180)
    assert result["state"].is_completed(), result["state"]
    tags = MlflowClient().get_model_version(NAME, state.challenger).tags
    assert tags["optiflow.release.by"] == "alice" and "checked the comparison" in tags["optiflow.release.reason"]
    assert champion_version(NAME, "challenger") is None
    decision = read_json(config.path("release") / "decision.json")
    if approve:
        assert champion_version(NAME, "champion") == "2" and champion_version(NAME, "previous") == "1"
        assert tags[PROMOTION_TAG] == "promoted" and decision["outcome"] == "promoted"
    else:
        assert champion_version(NAME, "champion") == "1" and tags[PROMOTION_TAG] == "aborted"
        assert decision["outcome"] == "aborted" and decision["reason"].startswith("rejected by alice")
    assert read_json(config.path("runs") / "v2" / "release.json") == decision


def test_an_approval_left_to_time_out_rejects(tmp_path: Path, churn_sample: pd.DataFrame) -> None:
    config = _project(tmp_path, churn_sample, release__approval="approve", release__approval_timeout_hours=0.001)
    start_release(NAME, "champion", "challenger", "2", "shadow", 0.0, time.time() - 60)
    _log(config, synthetic_log(1500, 1.5, 2.0, labelled=1200, at=time.time() - 30))
    state = release(str(config.root / "params.yaml"), return_state=True)
    assert state.is_failed() and "never resumed" in str(state.message)  # how Prefect ends a pause that timed out
    assert champion_version(NAME, "champion") == "1" and champion_version(NAME, "challenger") is None
    tags = MlflowClient().get_model_version(NAME, "2").tags
    assert tags[PROMOTION_TAG] == "aborted" and tags["optiflow.release.by"] == "timeout"


def test_a_degraded_canary_is_aborted_and_the_champion_untouched(tmp_path: Path, churn_sample: pd.DataFrame) -> None:
    config = _project(tmp_path, churn_sample)
    start_release(NAME, "champion", "challenger", "2", "canary", 0.1, time.time() - 60)
    _log(config, synthetic_log(1500, 2.0, 0.6, labelled=0, at=time.time() - 30))
    result = release(str(config.root / "params.yaml"))
    assert result["action"] == "abort" and result["outcome"] == "aborted"
    assert result["reason"].startswith("estimated ROC AUC drop") and result["figures"]["estimated"]["drop"] < -0.02
    assert champion_version(NAME, "champion") == "1" and champion_version(NAME, "challenger") is None
    assert (config.path("release") / "status.html").is_file()


def test_a_champion_promoted_by_a_release_is_rolled_back_when_it_degrades(
    tmp_path: Path, churn_sample: pd.DataFrame
) -> None:
    config = _project(tmp_path, churn_sample)
    began = time.time() - 600
    state = start_release(NAME, "champion", "challenger", "2", "shadow", 0.0, began)
    _log(config, synthetic_log(1500, 1.5, 2.0, labelled=1200, at=began + 10))
    assert release(str(config.root / "params.yaml"))["outcome"] == "promoted"
    assert champion_version(NAME, "champion") == state.challenger
    after = synthetic_log(1500, 0.5, 0.5, labelled=1200, seed=7)
    after = after[after["role"] == CHAMPION].assign(model_version="2", entity_key=lambda f: "after-" + f["entity_key"])
    _log(config, after.assign(at=time.time()))
    watched = release(str(config.root / "params.yaml"))
    assert watched["action"] == "rollback" and "ROC AUC drop" in watched["reason"]
    assert champion_version(NAME, "champion") == "1" and champion_version(NAME, "previous") is None
    assert MlflowClient().get_model_version(NAME, "2").tags[PROMOTION_TAG] == "rolled back"


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Receiver.received
    server.shutdown()


def test_each_event_reaches_the_webhook_once_through_the_automations(
    receiver: tuple[str, list[dict[str, Any]]], tmp_path: Path, churn_sample: pd.DataFrame
) -> None:
    from prefect import flow

    from flows.notifications import create_automations
    from tasks.events import NOTIFIED_EVENTS, emit

    url, received = receiver
    config = load_config(make_project(tmp_path, churn_sample, release__webhook_url=url))
    assert len(create_automations(config)) == len(NOTIFIED_EVENTS)
    assert len(create_automations(config)) == len(NOTIFIED_EVENTS)  # again: replaced, not duplicated

    @flow
    def announce() -> None:
        for event in NOTIFIED_EVENTS:
            emit(config, event, {"version": "2", "reason": f"test of {event}"})

    announce()
    deadline = time.monotonic() + 120
    while len(received) < len(NOTIFIED_EVENTS) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # a duplicate would arrive within the automations' next pass
    assert sorted(item["event"] for item in received) == sorted(NOTIFIED_EVENTS)
    assert all(item["model"] == NAME and item["payload"]["version"] == "2" for item in received)
