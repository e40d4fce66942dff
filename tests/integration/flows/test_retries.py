"""Transient errors inside a stage task are retried with backoff; bad input and config are not."""

from __future__ import annotations

import time

import pytest
from prefect import flow

from optiflow.errors import DataError, ServiceUnavailable
from tasks.common import stage_task

pytestmark = pytest.mark.usefixtures("prefect_api")  # flows run on one temporary Prefect API


def _flaky(failures: list[Exception]):
    attempts: list[float] = []

    @stage_task("ingest")
    def stage(config) -> dict:
        attempts.append(time.monotonic())
        if failures:
            raise failures.pop(0)
        return {"stage": "ingest"}

    return stage, attempts


@pytest.mark.parametrize(
    "error", [OSError(5, "Input/output error"), ServiceUnavailable("tracking store locked")], ids=["io", "service"]
)
def test_a_transient_error_is_retried_after_a_delay_and_the_task_completes(error: Exception, monkeypatch) -> None:
    stage, attempts = _flaky([error])
    monkeypatch.setattr("tasks.common.StageCache.compute_key", lambda *args, **kwargs: None)  # no cache record

    @flow
    def run() -> str:
        return stage(config=None, return_state=True).name

    assert run() == "Completed"
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= stage.retry_delay_seconds[0]
    assert stage.retries == 2 and list(stage.retry_delay_seconds) == [1, 5]  # growing delays: backoff


def test_bad_input_is_not_retried(monkeypatch) -> None:
    stage, attempts = _flaky([DataError("data/x.csv: file is empty")])
    monkeypatch.setattr("tasks.common.StageCache.compute_key", lambda *args, **kwargs: None)

    @flow
    def run() -> str:
        return stage(config=None, return_state=True).name

    assert run() == "Failed" and len(attempts) == 1
