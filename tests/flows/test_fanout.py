"""The fan-out hook: orchestration params pick the Prefect task runner; pieces run as task runs, results in order."""

from __future__ import annotations

import threading

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from optiflow.config import OrchestrationParams
from optiflow.tuning import run_serially
from tasks.fanout import fan_out, task_runner


def test_task_runner_follows_the_orchestration_params() -> None:
    threads = task_runner(OrchestrationParams(tune_workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = task_runner(OrchestrationParams(task_runner="dask", dask_workers=4, threads_per_worker=2))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 4 and local.cluster_kwargs["threads_per_worker"] == 2
    remote = task_runner(OrchestrationParams(task_runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert remote.address == "tcp://10.0.0.5:8786"
    assert OrchestrationParams().workers == 1 and OrchestrationParams(task_runner="dask").workers == 2


def _square_with_thread(value: int) -> tuple[int, str]:
    return value * value, threading.current_thread().name


def test_fan_out_runs_each_piece_as_a_task_run_and_keeps_the_order() -> None:
    @flow
    def pieces() -> list[tuple[int, str]]:
        with fan_out(OrchestrationParams(tune_workers=2), pieces=2) as run_all:
            return run_all(_square_with_thread, [3, 1, 2])

    results = pieces()
    assert [value for value, _ in results] == [9, 1, 4]
    assert all(name != threading.main_thread().name for _, name in results)  # ran on the runner's threads


def test_one_piece_runs_in_this_thread_without_a_runner() -> None:
    with fan_out(OrchestrationParams(task_runner="dask"), pieces=1) as run_all:
        assert run_all is run_serially
        assert run_all(_square_with_thread, [2]) == [(4, threading.current_thread().name)]
