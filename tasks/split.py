"""split: one row per key, each in the role its key gives it (train / valid / test / holdout / pool), and the
monitoring reference sampled from the holdout."""

from __future__ import annotations

from optiflow.config import Config
from optiflow.data.split import split_dataset
from optiflow.io import read_parquet, write_parquet
from tasks.common import StageResult, stage_logger, stage_task

SPLIT_FILES = ("train", "valid", "test", "holdout", "pool", "reference")


@stage_task("split")
def split(config: Config) -> StageResult:
    frame = read_parquet(config.path("dataset"))
    splits = split_dataset(frame, config.params.data, config.params.split, config.params.seed)
    for name in SPLIT_FILES:
        write_parquet(config.path(name), getattr(splits, name))
    sizes = splits.sizes()
    stage_logger().info("split rows: %s (%d duplicate key(s) dropped)", sizes, splits.duplicates)
    return {"stage": "split", **sizes, "duplicates": splits.duplicates}
