"""split: stratified, seeded train / valid / test files and the monitoring reference sample."""

from __future__ import annotations

from optiflow.config import Config
from optiflow.data.split import split_dataset
from optiflow.io import read_parquet, write_parquet
from tasks.common import StageResult, stage_logger, stage_task


@stage_task("split")
def split(config: Config) -> StageResult:
    frame = read_parquet(config.path("dataset"))
    splits = split_dataset(frame, config.params.data, config.params.split, config.params.seed)
    sizes = {}
    for name in ("train", "valid", "test", "reference"):
        part = getattr(splits, name)
        write_parquet(config.path(name), part)
        sizes[name] = len(part)
    stage_logger().info("split rows: %s", sizes)
    return {"stage": "split", **sizes}
