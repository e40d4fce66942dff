"""What every stage task shares: the task decorator, its cache policy, logging and artifacts.

A stage is a plain function of the Config. Prefect wraps it as a task (cache, retries, artifacts); DVC calls the
bare function through `python -m flows stage NAME` (`task.fn`), so both run exactly the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import CachePolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.results import get_result_store

from optiflow.config import Config
from optiflow.errors import OptiflowError, ServiceUnavailable
from optiflow.modeling.candidates import candidate_folders
from tasks.lineage import check_inputs, seed_cache, stage_key, stamp_matches, write_stamp
from tasks.stages import StageSpec, stage

StageResult = dict[str, Any]


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow (it reaches the UI), a plain logger under DVC."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("optiflow.stage")


@dataclass
class StageCache(CachePolicy):
    """Key = the stage's dependency contents + the params groups it reads (the same inputs DVC tracks).

    A cached result only describes outputs; it is reused only while the outputs on disk are the ones made for this
    key (their stamp in tasks/lineage.py says so). Deleted outputs, or outputs another run wrote for other inputs (a
    retraining on other data, `dvc repro` with other params), make the stage run again; the existing record stays
    valid and is simply not read this time.
    """

    stage_name: str = ""

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        config: Config = inputs["config"]
        spec = stage(self.stage_name)
        key = stage_key(spec, config)
        if stamp_matches(spec, config):
            return key
        return None if get_result_store().exists(key) else key


def _transient(task: Task, task_run: Any, state: Any) -> bool:
    """Retry unexpected errors (I/O, a busy database) and an unavailable service; never retry bad input, which
    fails the same way again."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, ServiceUnavailable) or not isinstance(error, OptiflowError)


def stage_task(name: str) -> Callable[[Callable[[Config], StageResult]], Task]:
    return task(
        name=name,
        cache_policy=StageCache(stage_name=name),
        persist_result=True,
        result_serializer="json",
        retries=2,
        retry_delay_seconds=[1, 5],
        retry_condition_fn=_transient,
    )


def run_stage(stage_task: Task, config: Config, commit: Callable[[StageSpec], None] = lambda spec: None) -> StageResult:
    """Run one stage task on inputs the lineage record vouches for, note whether it ran or came from the cache, and
    record it (its stamp, and ``commit`` for dvc.lock) once it completed; a failure propagates as raised and records
    nothing."""
    spec = stage(stage_task.name)
    check_inputs(spec, config)
    seed_cache(stage_task, spec, config)
    state = stage_task(config, return_state=True)
    result = state.result()
    write_stamp(spec, config, result)
    commit(spec)
    return {**result, "state": state.name}


def candidates(config: Config) -> dict[str, Path]:
    """Every candidate evaluate scores, by name: the trained families and the compressed variant (if one was chosen)."""
    return candidate_folders(config.path("candidates"), config.path("compressed"))


def in_prefect_run() -> bool:
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A Prefect table artifact when running under Prefect; nothing under DVC (the files carry the same data)."""
    if in_prefect_run():
        create_table_artifact(key=key, table=rows, description=description)


def publish_markdown(key: str, markdown: str, description: str) -> None:
    if in_prefect_run():
        create_markdown_artifact(key=key, markdown=markdown, description=description)
