"""serve-api during a release, on a real uvicorn (127.0.0.1, in this process) with two registered versions: shadow
never changes an answer and survives a challenger that raises; canary routing is stable per entity and holds its
share; every score lands in the prediction log, where labels from POST /feedback and `optiflow feedback` join."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from optiflow.config import Config, load_config
from optiflow.errors import DataError
from optiflow.release.registry import PROMOTION_TAG, STAGED, connect
from optiflow.release.rollout import ReleaseState, end_release, start_release
from optiflow.serving.api import (
    SHADOW_BATCHES,
    SHADOW_QUEUE_BATCHES,
    ReleaseStats,
    ShadowJob,
    ShadowScorer,
    _Origin,
)
from optiflow.serving.batch import Scorer
from optiflow.serving.feedback import store_feedback
from optiflow.serving.prediction_log import CHALLENGER, CHAMPION, PredictionLog, opened
from tests.registered import register_model, registry_project, typed_frame
from tests.unit.serving.test_api import _running

NAME = "optiflow-churn"
KEY = "customer_id"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, churn_sample: pd.DataFrame) -> Config:
    """v1 (logistic regression) is the champion; v2 (gradient boosting) passed its gates and waits for a release."""
    config = registry_project(tmp_path_factory.mktemp("release-serving"), churn_sample)
    typed = typed_frame(config, churn_sample)
    champion = register_model(config, typed)
    challenger = register_model(config, typed, family="hist_gradient_boosting", max_iter=20)
    client = MlflowClient()
    client.set_registered_model_alias(NAME, "champion", champion)
    client.set_model_version_tag(NAME, champion, PROMOTION_TAG, "promoted")
    client.set_model_version_tag(NAME, challenger, PROMOTION_TAG, STAGED)
    return config


def _settings(project: Config, log_name: str, **changes) -> Config:
    return load_config(
        project.root / "params.yaml",
        {
            "serve.reload_seconds": 0.2,
            "release.key_column": KEY,
            "paths.prediction_log": f"logs/{log_name}.sqlite",
            **changes,
        },
    )


@contextlib.contextmanager
def _release(config: Config, mode: str, share: float = 0.1) -> Iterator[ReleaseState]:
    """v2 as the challenger in ``mode`` while inside; aborted (alias gone, back to waiting) afterwards."""
    connect(config)
    state = start_release(NAME, "champion", "challenger", "2", mode, share, at=time.time())  # type: ignore[arg-type]
    try:
        yield state
    finally:
        connect(config)
        end_release(state, "aborted", "champion", "previous", "challenger", {"by": "test", "reason": "test over"})
        MlflowClient().set_model_version_tag(NAME, "2", PROMOTION_TAG, STAGED)


def _rows(sample: pd.DataFrame, n: int, first_key: int = 0) -> list[dict]:
    """``n`` rows (the sample cycled), each a distinct customer."""
    frame = sample.drop(columns=["churn"])
    records = json.loads(frame.iloc[[i % len(frame) for i in range(n)]].to_json(orient="records"))
    return [{**row, KEY: f"c{first_key + i}"} for i, row in enumerate(records)]


def _wait_for(url: str, done, what: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        metrics = httpx.get(f"{url}/metrics").json()
        if done(metrics):
            return metrics
        assert time.monotonic() < deadline, f"the server did not {what}: {metrics}"
        time.sleep(0.05)  # the server polls the registry every 0.2 s and scores shadows on its own thread


def _logged(config: Config) -> pd.DataFrame:
    with opened(config) as prediction_log:
        return prediction_log.read()


def _broken_for(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring with ``version`` raises; every other version scores as usual."""
    predict = Scorer.predict

    def failing(self: Scorer, rows: pd.DataFrame):
        if self.model_version == version:
            raise RuntimeError("challenger exploded")
        return predict(self, rows)

    monkeypatch.setattr(Scorer, "predict", failing)


def test_shadow_never_changes_an_answer_and_survives_a_challenger_that_raises(
    project: Config, churn_sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _settings(project, "shadow")
    rows = _rows(churn_sample, 20)

    def answer(url: str, batch: list[dict]) -> dict:
        response = httpx.post(f"{url}/predict", json={"rows": batch, "reasons": True}, timeout=30)
        assert response.status_code == 200 and response.headers["x-request-id"] == response.json()["request_id"]
        return response.json()

    with _running(config) as url:
        alone = answer(url, rows)
        with _release(config, "shadow"):
            _wait_for(url, lambda m: m["release"]["mode"] == "shadow", "pick up the shadow release")
            shadowed = answer(url, rows)
            _wait_for(url, lambda m: m["release"]["shadow_rows"] == 20, "score the shadow")
            _broken_for("2", monkeypatch)
            failing = [answer(url, rows[i : i + 5]) for i in range(0, 20, 5)]
            metrics = _wait_for(url, lambda m: m["release"]["challenger_errors"] == 20, "count challenger errors")
            monkeypatch.undo()
        _wait_for(url, lambda m: m["release"]["mode"] is None, "drop the ended release")
        after = answer(url, rows)
    ids = {name: body.pop("request_id") for name, body in (("alone", alone), ("shadowed", shadowed), ("after", after))}
    assert shadowed == alone == after  # same bodies, byte for byte but the request id
    assert [p for body in failing for p in body["predictions"]] == alone["predictions"]
    assert all(body["model_version"] == "1" for body in failing)
    assert metrics["release"]["shadow_jobs_dropped"] == 0 and metrics["release"]["canary_rows"] == 0

    logged = _logged(config)
    mine = logged[logged["request_id"] == ids["shadowed"]]
    answered, shadow = mine[mine["answered"]], mine[~mine["answered"]]
    assert (answered["role"] == CHAMPION).all() and (answered["model_version"] == "1").all()
    assert (shadow["role"] == CHALLENGER).all() and (shadow["model_version"] == "2").all()
    assert sorted(shadow["row"]) == sorted(answered["row"]) == list(range(20))
    assert list(answered.sort_values("row")["entity_key"]) == [f"c{i}" for i in range(20)]
    assert shadow["probability"].notna().all() and shadow["error"].isna().all()
    assert (
        not shadow.set_index("row")["probability"]
        .sort_index()
        .equals(answered.set_index("row")["probability"].sort_index())
    )  # two different models scored the rows
    errors = logged[logged["error"].notna()]
    assert len(errors) == 20 and (errors["role"] == CHALLENGER).all() and errors["probability"].isna().all()
    assert errors["error"].str.startswith("RuntimeError: challenger exploded").all()
    assert set(errors["request_id"]) == {body["request_id"] for body in failing}
    assert len(logged[logged["answered"]]) == 20 * 3 + 20  # every answer is logged, release or not


def test_canary_routes_each_entity_to_one_model_at_the_configured_share(
    project: Config, churn_sample: pd.DataFrame
) -> None:
    config = _settings(project, "canary")
    share = 0.3
    with _release(config, "canary", share), _running(config) as url:
        first = [
            httpx.post(f"{url}/predict", json={"rows": _rows(churn_sample, 1000, start)}, timeout=60).json()
            for start in range(0, 10_000, 1000)
        ]
        again = [  # the first 2,000 customers again, in other requests of another size
            httpx.post(f"{url}/predict", json={"rows": _rows(churn_sample, 250, start)}, timeout=60).json()
            for start in range(0, 2000, 250)
        ]
        metrics = _wait_for(url, lambda m: m["release"]["shadow_rows"] == 12_000, "score every row off the path")
    served_by = [p["model_version"] for body in first for p in body["predictions"]]
    served_again = [p["model_version"] for body in again for p in body["predictions"]]
    assert set(served_by) == {"1", "2"} and all(body["model_version"] == "1" for body in first)
    assert served_again == served_by[:2000]  # one customer, one model, whatever the request
    assert abs(served_by.count("2") / 10_000 - share) <= 0.02
    assert metrics["release"]["canary_rows"] == served_by.count("2") + served_again.count("2")

    logged = _logged(config)
    answered = logged[logged["answered"]]
    by_key = answered.groupby("entity_key")["model_version"].nunique()
    assert len(by_key) == 10_000 and (by_key == 1).all()
    canary = answered.drop_duplicates("entity_key").set_index("entity_key")["model_version"]
    assert abs((canary == "2").mean() - share) <= 0.02
    assert ((answered["model_version"] == "2") == (answered["role"] == CHALLENGER)).all()
    assert canary.loc[[f"c{i}" for i in range(10_000)]].tolist() == served_by  # the log says who answered
    other = logged[~logged["answered"]].set_index(["request_id", "row"])
    pairs = answered.set_index(["request_id", "row"]).join(other, rsuffix="_other", how="inner")
    assert len(pairs) == 12_000 and (pairs["model_version"] != pairs["model_version_other"]).all()


def test_a_failing_canary_answers_with_the_champion(
    project: Config, churn_sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _settings(project, "canary-failing")
    with _release(config, "canary", 0.5), _running(config) as url:
        _broken_for("2", monkeypatch)
        body = httpx.post(f"{url}/predict", json={"rows": _rows(churn_sample, 40)}, timeout=30)
        # the canary's rows fail on the answer path, the champion's rows off it: one failure per row
        metrics = _wait_for(url, lambda m: m["release"]["challenger_errors"] == 40, "count challenger errors")
    assert body.status_code == 200
    assert {p["model_version"] for p in body.json()["predictions"]} == {"1"}
    assert metrics["release"]["canary_rows"] == 0 and metrics["release"]["shadow_rows"] == 0
    logged = _logged(config)
    answered, errors = logged[logged["answered"]], logged[logged["error"].notna()]
    assert len(answered) == 40 and (answered["model_version"] == "1").all() and answered["error"].isna().all()
    assert sorted(errors["row"]) == list(range(40)) and (errors["model_version"] == "2").all()


def test_labels_from_the_api_and_from_a_file_join_the_logged_predictions(
    project: Config, churn_sample: pd.DataFrame, tmp_path
) -> None:
    config = _settings(project, "feedback", **{"serve.max_rows_per_request": 10})
    rows = _rows(churn_sample, 6)
    with _running(config) as url:
        httpx.post(f"{url}/predict", json={"rows": rows}, timeout=30)
        sent = httpx.post(
            f"{url}/feedback", json={"labels": [{"key": "c0", "label": 1}, {"key": "c1", "label": 0}]}, timeout=30
        )
        again = httpx.post(f"{url}/feedback", json={"labels": [{"key": "c1", "label": 1}]}, timeout=30)
        bad = [
            httpx.post(f"{url}/feedback", json=body, timeout=30)
            for body in (
                {"labels": [{"key": "c2", "label": 2}]},
                {"labels": [{"key": "c2", "label": True}]},
                {"labels": [{"key": "", "label": 1}]},
                {"labels": []},
                {"labels": [{"key": f"c{i}", "label": 1} for i in range(11)]},
            )
        ]
    assert sent.status_code == 200 and sent.json() == {"received": 2, "stored": 2}
    assert again.json() == {"received": 1, "stored": 1}
    assert [response.status_code for response in bad] == [422] * 5
    assert bad[0].json()["detail"][0]["field"] == "labels[0].label"

    labels = tmp_path / "labels.csv"
    pd.DataFrame({KEY: ["c2", "c3", "c4", None], "churn": ["Yes", "No", None, "Yes"]}).to_csv(labels, index=False)
    done = store_feedback(config, labels)
    assert (done.key_column, done.rows, done.stored, done.unlabelled) == (KEY, 4, 2, 2)
    logged = _logged(config).set_index("entity_key")["outcome"]
    assert logged.loc[["c0", "c1", "c2", "c3"]].tolist() == [1, 1, 1, 0]  # c1 relabelled: the newest label wins
    assert logged.loc[["c4", "c5"]].isna().all()


def test_a_labels_file_with_a_wrong_column_or_value_is_one_clear_error(project: Config, tmp_path) -> None:
    config = _settings(project, "feedback-bad")
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"customer": ["a"], "churn": ["Yes"]}).to_csv(labels, index=False)
    with pytest.raises(DataError, match=r"labels.csv: no column 'customer_id' \(the key column"):
        store_feedback(config, labels)
    pd.DataFrame({KEY: ["a", "b"], "churn": ["Yes", "maybe"]}).to_csv(labels, index=False)
    with pytest.raises(DataError, match=r"column 'churn' holds 'maybe' in 1 row\(s\); expected 'Yes'"):
        store_feedback(config, labels)
    with pytest.raises(DataError, match="labels file not found"):
        store_feedback(config, tmp_path / "missing.csv")
    pd.DataFrame({"account": [1042, 7], "churn": ["No", "Yes"]}).to_parquet(tmp_path / "labels.parquet")
    assert store_feedback(config, tmp_path / "labels.parquet", key="account").stored == 2
    with opened(config) as prediction_log, prediction_log.engine.connect() as connection:
        stored = dict(connection.exec_driver_sql("select entity_key, label from labels").fetchall())
    assert stored == {"1042": 0, "7": 1}  # whole-number ids are keyed by their digits, as the API reads them


def test_off_path_scoring_drops_and_counts_when_full_and_stops_at_close(tmp_path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_predict(rows: pd.DataFrame) -> np.ndarray:
        entered.set()
        release.wait(30)
        return np.full(len(rows), 0.7)

    scorer = SimpleNamespace(model_version="2", spec=SimpleNamespace(threshold=0.5), predict=slow_predict)
    prediction_log, stats = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite'}"), ReleaseStats()
    shadow = ShadowScorer(prediction_log, stats, max_rows=1)  # gathers up to SHADOW_BATCHES rows per call

    def job(i: int) -> ShadowJob:
        return ShadowJob(scorer, CHALLENGER, pd.DataFrame({"x": [i]}), [_Origin("r", i, 1.0, f"k{i}")])

    for i in range(SHADOW_BATCHES):
        shadow.submit(job(i))
    assert entered.wait(30)  # the thread holds the first SHADOW_BATCHES jobs, in one call
    for i in range(SHADOW_QUEUE_BATCHES + 3):
        shadow.submit(job(SHADOW_BATCHES + i))
    assert stats.shadow_jobs_dropped == 3  # the queue was full: never blocks the caller
    release.set()
    deadline = time.monotonic() + 30
    while stats.shadow_rows < SHADOW_BATCHES + SHADOW_QUEUE_BATCHES:
        assert time.monotonic() < deadline, "the off-path thread did not catch up"
        time.sleep(0.02)
    shadow.submit(job(-1))
    while not shadow.jobs.empty():  # the thread took it and waits SHADOW_GATHER_SECONDS for company: close then
        time.sleep(0.001)
    shadow.close()
    assert not shadow._thread.is_alive()
    prediction_log.close()
    reader = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    logged = reader.read()
    reader.close()
    submitted = SHADOW_BATCHES + SHADOW_QUEUE_BATCHES + 3 + 1
    assert len(logged) == stats.shadow_rows and stats.shadow_rows + stats.shadow_jobs_dropped == submitted
    assert (logged["probability"] == 0.7).all() and (logged["label"] == 1).all() and (~logged["answered"]).all()
