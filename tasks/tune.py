"""tune: search each model family's hyperparameters by CV on the train split; train then fits the best ones.

Each family gets an MLflow run `tuning-<family>` with one child run per trial, and models/tuning/ gets
<family>.json (best params, the DVC output train reads), the trials CSV (DVC plots) and two PNG plots.
"""

from __future__ import annotations

import csv
import io
import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from optiflow.config import Config, OrchestrationParams, Params, TuneParams, redact_uri
from optiflow.data.sampling import capped_rows
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels
from optiflow.errors import ConfigError
from optiflow.io import (
    SQLITE,
    atomic_dir,
    read_parquet,
    resolve_database_uri,
    sqlite_file,
    write_json,
    write_text,
    write_with,
)
from optiflow.modeling.tuning import (
    LATENCY,
    OBJECTIVE,
    TrialCallback,
    TuningResult,
    history_figure,
    importance_figure,
    pareto_figure,
    top_trials,
    trial_table,
    tune_family,
)
from optiflow.parallel import FanOut
from optiflow.release.registry import connect
from tasks.common import StageResult, publish_table, stage_logger, stage_task
from tasks.fanout import fan_out

_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


@stage_task("tune")
def tune(config: Config) -> StageResult:
    params, log = config.params, stage_logger()
    workers = params.orchestration.workers
    configured = resolve_database_uri(params.tune.storage, config.root)
    with _shared_storage(configured, workers, params.orchestration) as storage:
        settings = params.tune.model_copy(update={"storage": storage})
        _prepare_storage(settings.storage, config.path("tuning"))
        where = redact_uri(storage) if storage else "memory"
        log.info("tuning with %d worker(s) per study on %s; study storage: %s", workers, _runner_name(params), where)
        with fan_out(params.orchestration, workers) as run_shares:
            report = _tune_families(config, settings, workers, run_shares, log)
    return {"stage": "tune", "families": report}


def _tune_families(
    config: Config, settings: TuneParams, workers: int, run_shares: FanOut, log: logging.Logger | logging.LoggerAdapter
) -> dict[str, Any]:
    """One study per tuned family (`workers` shares each through `run_shares`), its MLflow runs and its files."""
    import mlflow

    params = config.params
    # The train split only: tuning never sees valid or test rows (at most tune.max_rows of them, stratified).
    frame = capped_rows(read_parquet(config.path("train")), params.data, settings.max_rows, params.seed)
    schema = resolve_schema(frame, params.data)
    target = labels(frame, params.data)
    connect(config)
    experiment_id = mlflow.get_experiment_by_name(params.tracking.experiment).experiment_id
    report: dict[str, Any] = {}
    unused = sorted(set(settings.spaces) - set(params.train.families))
    if unused:
        log.warning("tune.spaces has families that train.families does not train, not tuned: %s", unused)
    with atomic_dir(config.path("tuning")) as staging:
        for family, base in params.train.families.items():
            space = settings.spaces.get(family)
            if not space:
                report[family] = "not tuned (no tune.spaces entry; params.yaml train.families values are used)"
                log.info("%s: not tuned, keeps its train.families hyperparameters", family)
                continue
            with mlflow.start_run(run_name=f"tuning-{family}") as parent:
                mlflow.set_tags({"optiflow.stage": "tune", "model.family": family})
                mlflow.log_params({**settings.model_dump(exclude={"spaces", "storage"}), "seed": params.seed})
                mlflow.log_params(
                    {f"space.{key}": spec.model_dump_json(exclude_defaults=True) for key, spec in space.items()}
                )
                logger = _child_run_logger(experiment_id, parent.info.run_id, family)
                result = tune_family(
                    family,
                    space,
                    frame,
                    target,
                    schema,
                    settings,
                    params.seed,
                    logger,
                    fixed=base or {},
                    workers=workers,
                    fan_out=run_shares,
                )
                mlflow.set_tag("optuna.study_name", result.study_name)
                mlflow.log_params({f"best.{key}": value for key, value in result.best_params.items()})
                mlflow.log_metrics(
                    {
                        f"best_cv_{OBJECTIVE}": result.best_score,
                        "trials": result.n_trials,
                        "complete": result.n_complete,
                        "pruned": result.n_pruned,
                        "failed": result.n_failed,
                        "folds_computed": result.folds_computed,
                        "folds_possible": result.folds_possible,
                    }
                )
                for path in _write_outputs(staging, result):
                    mlflow.log_artifact(str(path), artifact_path="tuning")
            publish_table(
                f"tuning-{family.replace('_', '-')}",
                top_trials(result),
                f"{family}: top trials by CV {OBJECTIVE} ({result.sampler} sampler, {result.n_complete} complete, "
                f"{result.n_pruned} pruned of {result.n_trials})",
            )
            report[family] = {
                "best_score": round(result.best_score, 6),
                "best_params": result.best_params,
                "trials": result.n_trials,
                "pruned": result.n_pruned,
            }
            log.info(
                "%s: best CV %s %.4f after %d trials (%d pruned, %d/%d folds computed): %s",
                family,
                OBJECTIVE,
                result.best_score,
                result.n_trials,
                result.n_pruned,
                result.folds_computed,
                result.folds_possible,
                result.best_params,
            )
    return report


def _runner_name(params: Params) -> str:
    orchestration = params.orchestration
    if orchestration.task_runner == "threads":
        return "this process" if orchestration.workers == 1 else "Prefect threads"
    return f"Dask {orchestration.dask_address or f'LocalCluster ({orchestration.dask_workers} processes)'}"


@contextmanager
def _shared_storage(storage: str | None, workers: int, orchestration: OrchestrationParams) -> Iterator[str | None]:
    """The study storage the workers share: tune.storage, or with several workers and none set, a throwaway SQLite
    file for this run (a remote Dask cluster cannot open a local file: it needs a PostgreSQL tune.storage)."""
    if storage is not None or workers <= 1:
        yield storage
        return
    if orchestration.dask_address:
        raise ConfigError(
            f"orchestration.dask_address {orchestration.dask_address} with {workers} tuning workers needs a "
            "tune.storage every worker can reach, e.g. postgresql://user@db-host/optuna"
        )
    with tempfile.TemporaryDirectory(prefix="optiflow-optuna-") as folder:
        yield SQLITE + str(Path(folder) / "optuna.db")


def _prepare_storage(storage: str | None, tuning_dir: Path) -> None:
    """Refuse a study database inside the output folder (each run replaces that folder) and create its parent."""
    database = sqlite_file(storage)
    if database is not None:
        database = database.resolve()
        if database.is_relative_to(tuning_dir.resolve()):
            raise ConfigError(
                f"tune.storage {storage!r} lies inside paths.tuning ({tuning_dir}), which each run replaces; "
                "put the study database elsewhere, e.g. sqlite:///optuna.db"
            )
        database.parent.mkdir(parents=True, exist_ok=True)


def _child_run_logger(experiment_id: str, parent_run_id: str, family: str) -> TrialCallback:
    """One MLflow child run per finished trial via MlflowClient: unlike the fluent API it is safe from the
    worker threads that call back when tune.n_jobs > 1 (a lock also keeps SQLite writes one at a time)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client, lock = MlflowClient(), threading.Lock()

    def log_trial(trial: dict[str, Any]) -> None:
        with lock:
            run = client.create_run(
                experiment_id,
                run_name=f"{family}-trial-{trial['number']}",
                tags={
                    "mlflow.parentRunId": parent_run_id,
                    "optuna.trial": str(trial["number"]),
                    "optuna.state": trial["state"],
                    "model.family": family,
                },
            )
            stamp = run.info.start_time
            folds = enumerate(trial["fold_scores"])
            metrics = [Metric(f"fold_{OBJECTIVE}", score, stamp, fold) for fold, score in folds]
            if trial["state"] == "COMPLETE" and trial["value"] is not None:
                metrics.append(Metric(f"cv_{OBJECTIVE}", trial["value"], stamp, 0))
            if LATENCY in trial:
                metrics.append(Metric(LATENCY, trial[LATENCY], stamp, 0))
            client.log_batch(
                run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in trial["params"].items()]
            )
            if "error" in trial:
                client.set_tag(run.info.run_id, "optuna.error", trial["error"][:5000])
            client.set_terminated(run.info.run_id, status=_RUN_STATUS.get(trial["state"], "FAILED"))

    return log_trial


def _write_outputs(folder: Path, result: TuningResult) -> list[Path]:
    """<family>.json, <family>-trials.csv and the plots, each written atomically into the staging folder."""
    family = result.family
    summary = folder / f"{family}.json"
    write_json(summary, result.summary())
    trials = folder / f"{family}-trials.csv"
    write_text(trials, _csv(trial_table(result)))
    figures = {"history": history_figure(result), "importance": importance_figure(result)}
    if result.pareto is not None:
        figures["pareto"] = pareto_figure(result)
    written = [summary, trials]
    for name, figure in figures.items():
        path = folder / f"{family}-{name}.png"
        write_with(path, lambda tmp, figure=figure: figure.savefig(tmp, format="png", dpi=110))
        written.append(path)
    return written


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
