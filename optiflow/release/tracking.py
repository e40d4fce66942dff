"""What a run logs to MLflow besides the registry: the training run's params, metrics, reports and test dataset,
a tuning run per family with a child run per trial, and a monitoring run per checked batch.

MLflow is a release concern: stages and flows log through here, and the earlier layers (modeling's tuning callback)
never import it.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from optiflow.config import TIMING_REPORTS, Config, ParamSpec, TuneParams
from optiflow.modeling.tuning import LATENCY, OBJECTIVE, TrialCallback, TuningResult
from optiflow.release.registry import REFERENCE_ARTIFACT, connect

SEEN_KEYS_ARTIFACT = "keys/seen.parquet"  # the key of every row the model learnt from (train and valid)
TRAINING_ARTIFACT_FILES = ("metrics", "fairness", "fairness_table", "compression")
TRAINING_ARTIFACT_FOLDERS = ("plots", "validation", "evaluation", "explain", "compression_plots")
_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}  # Optuna trial state -> MLflow run


def log_training_run(
    config: Config,
    lineage: Mapping[str, str],
    metrics: Mapping[str, Any],
    evidence: Mapping[str, float],
    test: pd.DataFrame,
) -> None:
    """Into the active run: lineage tags, every param but paths, the final model's test metrics (test/*), each
    candidate's validation metrics (candidates/<family>/*: what chose), which data each decision used, the promotion
    evidence, the stage reports and the test dataset."""
    import mlflow

    params = config.params
    mlflow.set_tags(dict(lineage))
    mlflow.set_tags({f"decision.{name}": _decision_tag(row) for name, row in metrics.get("decisions", {}).items()})
    mlflow.log_params(flatten(params.model_dump(mode="json", by_alias=True, exclude={"paths"})))
    # grouped names (test/roc_auc, candidates/mlp/roc_auc, model/bytes, robustness/...; gates/... at the decision)
    mlflow.log_metrics({f"test/{key}": value for key, value in metrics["test"].items()})
    mlflow.log_metrics(dict(evidence))
    for family, values in metrics["candidates"].items():
        mlflow.log_metrics({f"candidates/{family}/valid_{key}": value for key, value in values.items()})
    # a stage DVC restored from its run cache wrote no timing reports (the run report says so); all else must be there
    for key in TRAINING_ARTIFACT_FILES:
        if key not in TIMING_REPORTS or config.path(key).is_file():
            mlflow.log_artifact(str(config.path(key)))
    # the sample monitoring compares batches with, kept with the model it belongs to
    mlflow.log_artifact(str(config.path("reference")), artifact_path=REFERENCE_ARTIFACT)
    for key in TRAINING_ARTIFACT_FOLDERS:
        if key not in TIMING_REPORTS or config.path(key).is_dir():
            mlflow.log_artifacts(str(config.path(key)), artifact_path=key)
    log_test_dataset(test, config.path("test").as_uri(), params.data.target)


def _decision_tag(row: Mapping[str, Any]) -> str:
    return f"{row['choice']} (on {row['data']}, {row['rows']} rows)"[:5000]


def log_seen_keys(*frames: pd.DataFrame) -> None:
    """Into the active run: the key of every row of ``frames`` (what the model learnt from), so a later release can
    compare this model only on rows it never saw."""
    import tempfile

    import mlflow

    from optiflow.data.keys import KEY_COLUMN

    keys = pd.concat([frame[KEY_COLUMN] for frame in frames], ignore_index=True).drop_duplicates()
    with tempfile.TemporaryDirectory(prefix="optiflow-keys-") as folder:
        path = Path(folder) / Path(SEEN_KEYS_ARTIFACT).name
        keys.to_frame(KEY_COLUMN).to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(SEEN_KEYS_ARTIFACT).parent))


def seen_keys(run_id: str) -> frozenset[str]:
    """The keys a registered model's run recorded with ``log_seen_keys``; raises when there is no such record."""
    import tempfile

    import mlflow

    from optiflow.data.keys import KEY_COLUMN

    with tempfile.TemporaryDirectory(prefix="optiflow-keys-") as folder:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SEEN_KEYS_ARTIFACT, dst_path=folder)
        return frozenset(pd.read_parquet(path)[KEY_COLUMN].astype(str))


@contextmanager
def tuning_run(family: str, settings: TuneParams, space: Mapping[str, ParamSpec], seed: int) -> Iterator[TrialCallback]:
    """The family's run `tuning-<family>` (settings and search space as params) around its study; yields the
    callback that gives each finished trial a child run."""
    import mlflow

    with mlflow.start_run(run_name=f"tuning-{family}") as parent:
        mlflow.set_tags({"optiflow.stage": "tune", "model.family": family})
        mlflow.log_params({**settings.model_dump(exclude={"spaces", "storage"}), "seed": seed})
        mlflow.log_params({f"space.{key}": spec.model_dump_json(exclude_defaults=True) for key, spec in space.items()})
        yield trial_logger(parent.info.experiment_id, parent.info.run_id, family)


def log_tuning_result(result: TuningResult, files: list[Path]) -> None:
    """Into the active tuning run: the study, the best params, the trial counts and the study's output files."""
    import mlflow

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
    for path in files:
        mlflow.log_artifact(str(path), artifact_path="tuning")


def trial_logger(experiment_id: str, parent_run_id: str, family: str) -> TrialCallback:
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


def log_monitoring_run(config: Config, summary: Mapping[str, Any], decision: str, reason: str) -> None:
    """A run `monitoring-<batch>`: the decision and reason as tags, the drift figures, the batch's report folder."""
    import mlflow

    connect(config)
    figures = {
        key: summary[key]
        for key in ("drift_share", "prediction_drift", "quality_drop", "rows", "rows_checked")
        if summary.get(key) is not None
    }
    performance = summary.get("performance") or {}
    for name, band in (performance.get("estimated") or {}).items():
        if isinstance(band, dict) and band.get("estimate") is not None:
            figures[f"estimated_{name}"] = band["estimate"]
    figures |= {f"realised_{name}": value for name, value in (performance.get("realised") or {}).items()}
    with mlflow.start_run(run_name=f"monitoring-{summary['batch_id']}"):
        mlflow.set_tags(
            {
                "optiflow.kind": "monitoring",
                "optiflow.batch": summary["batch_id"],
                "optiflow.decision": decision,
                "optiflow.reason": reason[:5000],
                "champion_version": summary["champion_version"],
                "optiflow.shift": str((summary.get("diagnosis") or {}).get("shift")),
            }
        )
        mlflow.log_metrics({key: float(value) for key, value in figures.items()})
        mlflow.log_artifacts(str(Path(summary["report"]).parent), artifact_path=f"monitoring/{summary['batch_id']}")


def log_test_dataset(test: pd.DataFrame, source: str, target: str) -> None:
    import mlflow

    with warnings.catch_warnings():
        # the local file URI matches two equivalent MLflow source types, and the schema hint is about serving
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        dataset = mlflow.data.from_pandas(test, source=source, targets=target, name="test")
    mlflow.log_input(dataset, context="testing")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as dotted MLflow params (`evaluate.threshold_policy`); an empty group is one param."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat
