"""train: fit every model family on the train split with its tuned hyperparameters, preprocessing included."""

from __future__ import annotations

import functools

from optiflow.config import Config
from optiflow.data.sampling import capped_rows
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels
from optiflow.io import atomic_dir, read_parquet
from optiflow.modeling.candidates import save_candidate
from optiflow.modeling.families import build_pipeline, takes_device
from optiflow.modeling.mlp import resolve_device
from optiflow.modeling.tuning import tuned_hyperparameters
from optiflow.timing import timed
from tasks.common import StageResult, stage_logger, stage_task


@stage_task("train")
def train(config: Config) -> StageResult:
    params, log = config.params, stage_logger()
    frame = capped_rows(read_parquet(config.path("train")), params.data, params.train.max_rows, params.seed)
    schema = resolve_schema(frame, params.data)
    features, target = frame[list(schema.features)], labels(frame, params.data)
    families = tuned_hyperparameters(params.train.families, config.path("tuning"))
    # train.device resolved before any fit: CUDA asked for and absent is a clear error, not a silent CPU run
    torch_device = resolve_device(params.train.device) if any(map(takes_device, families)) else None
    fitted = {}
    with atomic_dir(config.path("candidates")) as staging:
        for family, hyperparameters in families.items():
            model = build_pipeline(family, hyperparameters, schema, params.seed, device=params.train.device)
            _, seconds = timed(functools.partial(model.fit, features, target))
            seconds = round(seconds, 3)
            save_candidate(
                staging / family,
                model,
                {
                    "family": family,
                    "hyperparameters": hyperparameters,
                    "train_rows": len(frame),
                    "features": list(schema.features),
                    "device": torch_device if takes_device(family) else "cpu",
                },
            )
            fitted[family] = seconds
            log.info("trained %s on %d rows in %.2f s", family, len(frame), seconds)
    return {"stage": "train", "fit_seconds": fitted}
