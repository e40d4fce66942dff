"""The training DAG: every stage in order, each a cached, retried Prefect task over files.

Run it with `optiflow train` (or `python -m flows train`), or from a Prefect deployment; `dvc repro` runs the
same stage functions. Both share one lineage record (tasks/lineage.py): under the training lock each completed stage
is stamped and, in a DVC project whose params.yaml describes the run, committed to dvc.lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from prefect import flow

from optiflow.io import exclusive_lock
from optiflow.preflight import load_settings_for_data
from tasks.common import StageResult, publish_markdown, publish_table, run_stage, stage_logger
from tasks.events import RETRAIN_EVENT, emit
from tasks.lineage import dvc_lock_committer
from tasks.stages import STAGES, task_for

RUN_LOCK_FILE = ".optiflow-training.lock"


@contextlib.contextmanager
def training_lock(root: Path) -> Iterator[None]:
    """One training run at a time per project: runs share data/processed, models/ and reports/, so a concurrent run
    would overwrite the splits, candidates and metrics another is reading and register the other's model."""
    path = Path(root) / RUN_LOCK_FILE
    with exclusive_lock(path, lambda: stage_logger().warning("another training run holds %s; waiting for it", path)):
        yield


@flow(
    name="training",
    description=(
        "Validate, split, tune, train, compress, evaluate, check fairness, explain, and register a tabular classifier."
    ),
)
def training(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    dataset: str | None = None,
    sampler: Literal["grid", "random", "tpe"] | None = None,
    n_trials: int | None = None,
    reason: str | None = None,
    batch_id: str | None = None,
    drift_share: float | None = None,
    task_runner: Literal["threads", "dask"] | None = None,
) -> list[StageResult]:
    """`overrides` sets dotted params keys for this run only, e.g. {"split.test_size": 0.25}.

    The typed parameters are the common overrides, as the Prefect UI shows them: `dataset` trains on another file
    (its checksum is not checked), `sampler` / `n_trials` steer tuning. `reason`, `batch_id` and `drift_share` say
    why a retraining was started (a drift event fills them in); they are reported, not used. `task_runner`
    overrides orchestration.task_runner (where tuning shares run).
    """
    typed: dict[str, Any] = {
        key: value
        for key, value in {
            "tune.sampler": sampler,
            "tune.n_trials": n_trials,
            "orchestration.task_runner": task_runner,
        }.items()
        if value is not None
    }
    if dataset:
        typed.update({"data.source": dataset, "data.sha256": None})
    config = load_settings_for_data(params_path, {**typed, **(overrides or {})})
    if reason or batch_id:
        publish_markdown(
            "training-trigger",
            f"# Retraining\n\nBatch `{batch_id}`, drift share {drift_share}, data `{dataset}`\n\n{reason}",
            "Why this training run was started",
        )
        stage_logger().info("retraining for batch %s (drift share %s): %s", batch_id, drift_share, reason)
        emit(config, RETRAIN_EVENT, {"batch_id": batch_id, "drift_share": drift_share, "reason": reason})
    with training_lock(config.root), dvc_lock_committer(config, params_path) as commit:
        results = [run_stage(task_for(spec), config, commit) for spec in STAGES]  # the order DVC runs them in too
    publish_table(
        "training-stages",
        [{"stage": r["stage"], "state": r["state"]} for r in results],
        "Stages of this training run and whether each ran or came from the cache",
    )
    return results
