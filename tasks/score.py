"""score: batch-score a file with a registered model (not a training stage: it runs on demand, never cached)."""

from __future__ import annotations

from contextlib import nullcontext

from prefect import task
from prefect.cache_policies import NO_CACHE

from optiflow.config import Config
from optiflow.errors import ConfigError
from optiflow.serving.batch import ScoreSummary, score_batch
from tasks.common import publish_markdown, publish_table, stage_logger
from tasks.fanout import fan_out
from tasks.monitoring import NO_NEW_BATCHES


@task(name="score-batch", cache_policy=NO_CACHE)
def score_file_task(
    config: Config,
    source: str,
    output: str,
    alias: str | None = None,
    version: str | None = None,
    force: bool = False,
) -> dict:
    """Chunks are scored on score.workers threads, or with orchestration.task_runner dask as pieces on Dask workers
    (score.workers chunks at a time). ``force`` lets the output replace the input or a file the project keeps."""
    params = config.params
    orchestration = params.orchestration
    on_dask = orchestration.task_runner == "dask"
    if on_dask and orchestration.dask_address and params.score.cache:
        raise ConfigError(
            f"score.cache is a SQLite file on this machine ({config.path('prediction_cache')}); workers of the Dask "
            f"cluster at orchestration.dask_address {orchestration.dask_address} cannot share it: set score.cache false"
        )
    with fan_out(orchestration, params.score.workers) if on_dask else nullcontext() as score_chunks:
        summary: ScoreSummary = score_batch(
            config, source, output, alias=alias, version=version, fan_out=score_chunks, force=force
        )
    publish_table(
        "batch-scoring",
        [{"measure": key, "value": str(value)} for key, value in summary.to_dict().items()],
        f"Batch scoring of {source} with {summary.model_name} v{summary.model_version}",
    )
    stage_logger().info("scored %s -> %s: %s", source, output, summary.to_dict())
    return summary.to_dict()


@task(name="nothing-to-score")
def report_nothing_to_score(config: Config) -> str:
    """A scheduled run with no new batch completes and says so, in the log and as a Prefect artifact."""
    params = config.params.paths
    message = f"{NO_NEW_BATCHES} in {params.batches}: every batch there has its scores in {params.scored}"
    stage_logger().info(message)
    publish_markdown("scoring-no-new-batches", f"# Batch scoring\n\n{message}.\n", message)
    return message
