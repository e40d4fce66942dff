"""The fan-out hook: orchestration params pick the Prefect task runner; pieces run as task runs, results in order;
compression variants and scoring chunks built or scored on Dask workers match what threads give."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from optiflow.assess.compression import CompressionResult, EvalSplit, compress_model, select_variant
from optiflow.config import CompressParams, OrchestrationParams, load_config
from optiflow.errors import ConfigError
from optiflow.modeling.mlp import TorchMLPClassifier
from optiflow.parallel import FanOut, run_serially
from optiflow.release.registry import load_registered
from optiflow.serving.batch import Scorer, ScoreSummary, rejects_path, score_file
from optiflow.serving.cache import PredictionCache
from tasks.fanout import fan_out, task_runner
from tasks.score import score_file_task
from tests.conftest import make_project
from tests.registered import register_model, registry_project, typed_frame

pytestmark = pytest.mark.usefixtures("prefect_api")  # flows run on one temporary Prefect API


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


def _malloc_and_thread_settings(_: int) -> tuple[str | None, str | None]:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")


def test_local_dask_workers_keep_glibc_malloc_defaults_and_one_openmp_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask's nanny would set MALLOC_TRIM_THRESHOLD_ in each worker (and in this process), which pins glibc's mmap
    threshold and made every tuning trial on a worker take 1.4x the CPU time."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)

    @flow
    def on_dask() -> list[tuple[str | None, str | None]]:
        with fan_out(OrchestrationParams(task_runner="dask", dask_workers=1), pieces=2) as run_all:
            return run_all(_malloc_and_thread_settings, [0, 1])

    assert on_dask() == [(None, "1"), (None, "1")]
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ


# Compression variants and scoring chunks on a LocalCluster of 2 Dask processes give what threads give.

DASK = OrchestrationParams(task_runner="dask", dask_workers=2)
SETTINGS = CompressParams(
    finetune_epochs=2, measure={"batch_sizes": (1, 64), "repeats": 3, "warmup": 1}, select={"min_group_size": 20}
)


def _compress(fan_out_of: Callable[[int], AbstractContextManager[FanOut]]) -> CompressionResult:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    y = (X[:, 0] - X[:, 1] + 0.5 * rng.normal(size=300) > 0).astype(int)
    model = TorchMLPClassifier(hidden_units=16, max_epochs=10, batch_size=64, random_state=0).fit(X, y)
    splits = {
        name: EvalSplit(X[rows], y[rows], pd.DataFrame({"group": np.where(X[rows, 2] > 0, "a", "b")}))
        for name, rows in (("valid", slice(0, 150)), ("test", slice(150, 300)))
    }
    with fan_out_of(len(SETTINGS.sparsities) + 3) as build:
        return compress_model(model, X, y, splits, lambda scores: 0.5, SETTINGS, model.predict_proba(X)[:, 1], build)


def _comparable(result: CompressionResult) -> list[dict]:
    """Everything measured but the timings (and the throughput derived from them)."""
    return [{k: v for k, v in row.items() if k not in ("latency_ms", "rows_per_s")} for row in result.rows]


def test_compression_variants_built_on_dask_workers_measure_as_built_here() -> None:
    @flow
    def on_dask() -> CompressionResult:
        return _compress(lambda pieces: fan_out(DASK, pieces))

    here, there = _compress(lambda pieces: fan_out(OrchestrationParams(), pieces)), on_dask()
    assert [row["variant"] for row in there.rows] == [row["variant"] for row in here.rows]
    assert [row["variant"] for row in here.rows][-1] == "distilled" and len(here.rows) == 9  # with 2 ONNX int8 twins
    assert _comparable(there) == _comparable(here)  # AUCs, group metrics, flips, bytes, parameter counts
    assert _decision(_timed_as(there, here)) == _decision(here)


def _decision(result: CompressionResult) -> tuple:
    """The choice and every variant's verdict (reason texts quote timings, which differ from run to run)."""
    choice = result.choice
    return choice.chosen, choice.fallback, [(j.variant, j.passed) for j in choice.judgements]


def _timed_as(result: CompressionResult, timings: CompressionResult) -> CompressionResult:
    """``result`` judged again with the other run's timings: which of an int8 network and its ONNX Runtime twin may
    be chosen is decided by their timed speed (other_int8_runtime), which differs from run to run."""
    latency = {row["variant"]: row["latency_ms"] for row in timings.rows}
    rows = [{**row, "latency_ms": latency[row["variant"]]} for row in result.rows]
    return replace(result, rows=tuple(rows), choice=select_variant(rows, SETTINGS.select))


def test_scoring_chunks_on_dask_workers_write_what_threads_write(tmp_path: Path, churn_sample: pd.DataFrame) -> None:
    config = registry_project(tmp_path / "project", churn_sample)
    register_model(config, typed_frame(config, churn_sample))
    loaded = load_registered(config.params.registry.model_name, version="1")
    scorer = Scorer(loaded.model, loaded.spec, config.params.data, config.params.validation, "m", "1", reasons=2)
    source = tmp_path / "input.csv"
    rows = churn_sample.head(120).drop(columns=["churn"]).astype({"tenure": object})
    rows.loc[5, "tenure"] = "soon"  # a reject travels back too
    rows.to_csv(source, index=False)
    params = config.params.score.model_copy(update={"chunk_rows": 25, "workers": 2})
    threads = score_file(source, tmp_path / "threads.csv", scorer, params)
    cache = PredictionCache(tmp_path / "cache.sqlite")

    @flow
    def on_dask() -> ScoreSummary:
        with fan_out(DASK, params.workers) as score_chunks:
            return score_file(source, tmp_path / "dask.csv", scorer, params, cache, score_chunks)

    dask = on_dask()
    assert (dask.chunks, dask.rows_scored, dask.rows_rejected) == (threads.chunks, 119, 1) == (5, 119, 1)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "dask.csv"), pd.read_csv(tmp_path / "threads.csv"))
    for name in ("dask.csv", "threads.csv"):
        assert rejects_path(tmp_path / name).read_text().count("tenure: not a number ('soon')") == 1
    warm = score_file(source, tmp_path / "warm.csv", scorer, params, cache)  # the workers filled the cache
    assert warm.cache_hits == 119


def test_a_remote_cluster_cannot_share_the_local_prediction_cache(tmp_path: Path, churn_sample: pd.DataFrame) -> None:
    remote = {"orchestration.task_runner": "dask", "orchestration.dask_address": "tcp://10.0.0.5:8786"}
    config = load_config(make_project(tmp_path, churn_sample), {**remote, "score.cache": True})
    with pytest.raises(ConfigError, match=r"score.cache is a SQLite file on this machine .*tcp://10.0.0.5:8786"):
        score_file_task.fn(config, str(tmp_path / "in.csv"), str(tmp_path / "out.csv"))
