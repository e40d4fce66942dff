"""What a run logs to MLflow besides the registry: the training run's params, metrics, reports and test dataset,
and a monitoring run per checked batch.

MLflow is a release concern: stages and flows log through here, and the earlier layers (modeling's tuning callback)
never import it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from optiflow.config import Config
from optiflow.release.registry import REFERENCE_ARTIFACT, connect

TRAINING_ARTIFACT_FILES = ("metrics", "fairness", "fairness_table", "compression")
TRAINING_ARTIFACT_FOLDERS = ("plots", "validation", "evaluation", "explain", "compression_plots")


def log_training_run(
    config: Config,
    lineage: Mapping[str, str],
    metrics: Mapping[str, Any],
    evidence: Mapping[str, float],
    test: pd.DataFrame,
) -> None:
    """Into the active run: lineage tags, every param but paths, the test metrics of each candidate, the promotion
    evidence, the stage reports and the test dataset."""
    import mlflow

    params = config.params
    mlflow.set_tags(dict(lineage))
    mlflow.log_params(flatten(params.model_dump(mode="json", by_alias=True, exclude={"paths"})))
    mlflow.log_metrics({f"test_{key}": value for key, value in metrics["test"].items()})
    mlflow.log_metrics(dict(evidence))
    for family, values in metrics["candidates"].items():
        mlflow.log_metrics({f"{family}.test_{key}": value for key, value in values.items()})
    for key in TRAINING_ARTIFACT_FILES:
        mlflow.log_artifact(str(config.path(key)))
    # the sample monitoring compares batches with, kept with the model it belongs to
    mlflow.log_artifact(str(config.path("reference")), artifact_path=REFERENCE_ARTIFACT)
    for key in TRAINING_ARTIFACT_FOLDERS:
        mlflow.log_artifacts(str(config.path(key)), artifact_path=key)
    log_test_dataset(test, config.path("test").as_uri(), params.data.target)


def log_monitoring_run(config: Config, summary: Mapping[str, Any], decision: str, reason: str) -> None:
    """A run `monitoring-<batch>`: the decision and reason as tags, the drift figures, the batch's report folder."""
    import mlflow

    connect(config)
    figures = {
        key: summary[key]
        for key in ("drift_share", "prediction_drift", "quality_drop", "rows", "rows_checked")
        if summary.get(key) is not None
    }
    with mlflow.start_run(run_name=f"monitoring-{summary['batch_id']}"):
        mlflow.set_tags(
            {
                "optiflow.kind": "monitoring",
                "optiflow.batch": summary["batch_id"],
                "optiflow.decision": decision,
                "optiflow.reason": reason[:5000],
                "champion_version": summary["champion_version"],
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
