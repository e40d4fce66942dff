"""ingest: read the configured source, check its sha256, type it, and write the interim Parquet table."""

from __future__ import annotations

from optiflow.config import Config
from optiflow.ingest import load_dataset
from optiflow.io import write_parquet
from tasks.common import StageResult, stage_logger, stage_task


@stage_task("ingest")
def ingest(config: Config) -> StageResult:
    frame, digest = load_dataset(config.source, config.params.data)
    write_parquet(config.path("dataset"), frame)
    stage_logger().info("ingested %s: %d rows x %d columns (sha256 %s)", config.source, *frame.shape, digest[:12])
    return {"stage": "ingest", "rows": len(frame), "columns": frame.shape[1], "sha256": digest}
