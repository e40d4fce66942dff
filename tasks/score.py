"""score: batch-score a file with a registered model (not a training stage: it runs on demand, never cached)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from optiflow.config import Config
from optiflow.scoring import ScoreSummary, score_batch
from tasks.common import publish_table, stage_logger


@task(name="score-batch", cache_policy=NO_CACHE)
def score_file_task(
    config: Config, source: str, output: str, alias: str | None = None, version: str | None = None
) -> dict:
    summary: ScoreSummary = score_batch(config, source, output, alias=alias, version=version)
    publish_table(
        "batch-scoring",
        [{"measure": key, "value": str(value)} for key, value in summary.to_dict().items()],
        f"Batch scoring of {source} with {summary.model_name} v{summary.model_version}",
    )
    stage_logger().info("scored %s -> %s: %s", source, output, summary.to_dict())
    return summary.to_dict()
