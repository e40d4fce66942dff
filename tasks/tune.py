"""tune: search each model family's hyperparameters by CV on the train split; train then fits the best ones.

Each family gets an MLflow run `tuning-<family>` with one child run per trial, and models/tuning/ gets
<family>.json (best params, the DVC output train reads), the trials CSV (DVC plots) and two PNG plots.
"""

from __future__ import annotations

from collections.abc import Mapping

from optiflow.config import Config, ParamSpec, redact_uri
from optiflow.io import atomic_dir, read_parquet
from optiflow.modeling.families import with_device
from optiflow.modeling.studies import (
    Study,
    study_settings,
    tune_families,
    tuning_rows,
    tuning_summary,
    write_study_outputs,
)
from optiflow.modeling.tuning import OBJECTIVE, TuningResult, top_trials
from optiflow.release.registry import connect
from optiflow.release.tracking import log_tuning_result, tuning_run
from tasks.common import StageResult, publish_table, stage_logger, stage_task
from tasks.fanout import fan_out, runner_name


@stage_task("tune")
def tune(config: Config) -> StageResult:
    params, orchestration, workers = config.params, config.params.orchestration, config.params.orchestration.workers
    with study_settings(params.tune, config.root, config.path("tuning"), orchestration) as settings:
        runner, where = runner_name(orchestration), redact_uri(settings.storage) if settings.storage else "memory"
        stage_logger().info("tuning with %d worker(s) per study on %s; study storage: %s", workers, runner, where)
        rows = tuning_rows(read_parquet(config.path("train")), params.data, settings.max_rows, params.seed)
        connect(config)
        with fan_out(orchestration, workers) as run_shares, atomic_dir(config.path("tuning")) as staging:

            def tracked(family: str, space: Mapping[str, ParamSpec], study: Study) -> TuningResult:
                """The family's study inside its MLflow run; its files are written and logged there."""
                with tuning_run(family, settings, space, params.seed) as log_trial:
                    result = study(log_trial)
                    log_tuning_result(result, write_study_outputs(staging, result))
                publish_table(
                    f"tuning-{family.replace('_', '-')}",
                    top_trials(result),
                    f"{family}: top trials by CV {OBJECTIVE} ({result.sampler} sampler, {result.n_complete} complete, "
                    f"{result.n_pruned} pruned of {result.n_trials})",
                )
                return result

            results = tune_families(
                rows,
                with_device(params.train.families, params.train.device),
                settings,
                params.seed,
                workers=workers,
                fan_out=run_shares,
                run_study=tracked,
            )
    return {"stage": "tune", "families": tuning_summary(results)}
