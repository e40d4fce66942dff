"""Where a stage's independent pieces run: the one place that turns the runtime settings' `orchestration:` into a
Prefect task runner (threads in this process, or Dask workers through prefect-dask).

A stage asks for `fan_out(orchestration, pieces)` and hands the core the callable it yields; the core never knows
whether its pieces ran in threads, in local Dask processes or on a remote cluster. Tuning shares use it today;
compression variants and scoring chunks take the same hook.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from optiflow.config import OrchestrationParams
from optiflow.parallel import FanOut, run_serially


@task(name="piece", cache_policy=NO_CACHE, persist_result=False, retries=0)
def run_piece(fn: Callable[[Any], Any], item: Any) -> Any:
    """One piece of a stage (never retried: a rerun tuning share would add trials, not repeat them)."""
    return fn(item)


def task_runner(orchestration: OrchestrationParams, max_workers: int | None = None) -> TaskRunner:
    """The configured Prefect task runner: a thread pool, a LocalCluster of Dask processes it starts, or the Dask
    scheduler at `dask_address`."""
    if orchestration.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=max_workers or orchestration.workers)
    from prefect_dask import DaskTaskRunner

    if orchestration.dask_address:
        return DaskTaskRunner(address=orchestration.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": orchestration.dask_workers,
            "threads_per_worker": orchestration.threads_per_worker,
            "processes": True,
            "dashboard_address": None,
            "env": worker_environment(),
        },
    )


def runner_name(orchestration: OrchestrationParams) -> str:
    """Where the pieces run, for the logs."""
    if orchestration.task_runner == "threads":
        return "this process" if orchestration.workers == 1 else "Prefect threads"
    return f"Dask {orchestration.dask_address or f'LocalCluster ({orchestration.dask_workers} processes)'}"


def worker_environment() -> dict[str, str]:
    """Environment for local Dask worker processes: report to this process's Prefect API and keep native thread
    pools at the per-worker size. A server's URL is inherited from PREFECT_API_URL, but the ephemeral API lives in
    this process only: without its URL every worker would start (and wait for) a temporary API of its own."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    env = {key: os.environ[key] for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if key in os.environ}
    settings = get_current_settings()
    if not settings.api.url and settings.server.ephemeral.enabled:
        ephemeral = SubprocessASGIServer()
        ephemeral.start()  # already running inside a flow run; under DVC the first task submission would start it
        env["PREFECT_API_URL"] = ephemeral.api_url
    return env


@contextmanager
def worker_malloc_defaults() -> Iterator[None]:
    """Start LocalCluster workers with glibc's own malloc tuning. Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in
    every worker it spawns (and, leaking, in this process's environment), and setting it pins glibc's mmap threshold
    at 128 KiB: each numpy temporary is then mapped and unmapped anew (12 boosting trials: 12.7 s of CPU instead of
    8.9 s). None removes a variable from the nanny's list; its one-thread OpenMP/BLAS limits stay."""
    import dask
    import distributed  # noqa: F401  (its defaults join dask's config first: leaving the block restores them too)

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        yield


@contextmanager
def fan_out(orchestration: OrchestrationParams, pieces: int) -> Iterator[FanOut]:
    """A FanOut for up to `pieces` parallel pieces: each piece a Prefect task run on the configured runner (the
    runner, and a LocalCluster, start once for the whole block). One piece runs in this thread, no runner at all."""
    if pieces <= 1:
        yield run_serially
        return
    on_dask = orchestration.task_runner == "dask"  # a remote cluster's workers were spawned elsewhere: no effect
    with worker_malloc_defaults() if on_dask else nullcontext(), task_runner(orchestration, pieces) as runner:

        def run_all(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
            name = fn.__name__.replace("_", "-")
            futures = [
                runner.submit(run_piece.with_options(task_run_name=f"{name}-{index}"), {"fn": fn, "item": item})
                for index, item in enumerate(items)
            ]
            return [future.result() for future in futures]

        yield run_all
