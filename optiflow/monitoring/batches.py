"""What the monitoring flow needs besides drift and the decision: the champion, batches, the history, the
retraining window's dataset. Kept here so flows/tasks stay thin and every piece is testable without Prefect."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optiflow.config import Config, DataParams
from optiflow.data.ingest import coerce, load_dataset, read_source
from optiflow.errors import DataError, OptiflowError
from optiflow.io import read_parquet, write_parquet, write_with
from optiflow.monitoring.retraining import INVALID, RETRAINING_DECISIONS, window_batches

log = logging.getLogger(__name__)

BATCH_SUFFIXES = (".csv", ".parquet", ".pq", ".gz")
HISTORY_COLUMNS = (
    "batch_id",
    "at",
    "source",
    "rows",
    "rows_checked",
    "labelled_rows",
    "drift_share",
    "drifted_columns",
    "prediction_drift",
    "roc_auc",
    "f1",
    "quality_drop",
    "champion_version",
    "decision",
    "reason",
    "new_version",
)


@dataclass(frozen=True)
class Champion:
    """The registered model the batch is scored with, and its own test figures to compare quality against."""

    name: str
    version: str
    model: Any  # the verified candidate pipeline (registry.load_registered); predict_proba on raw rows
    reference: pd.DataFrame  # the reference sample of the champion's own training run
    threshold: float
    test: dict[str, float]  # roc_auc, f1 on the champion's test split

    def scores(self, features: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict_proba(features))[:, 1]


def load_champion(config: Config) -> Champion:
    """The one place the champion is loaded (pinned to the version the alias names now), every file verified
    against the sha256 recorded at registration before anything is loaded."""
    from mlflow import MlflowClient

    from optiflow.release.registry import champion_version, connect, load_registered

    connect(config, create=False)
    name, alias = config.params.registry.model_name, config.params.registry.champion_alias
    version = champion_version(name, alias)
    if version is None:
        raise OptiflowError(f"{name}: no version holds the alias {alias!r}; train one first (`optiflow train`)")
    client = MlflowClient()
    record = client.get_model_version(name, version)
    metrics = client.get_run(record.run_id).data.metrics
    loaded = load_registered(name, version=version)
    return Champion(
        name=name,
        version=version,
        model=loaded.model,
        reference=_champion_reference(config, record.run_id),
        threshold=loaded.spec.threshold,
        test={"roc_auc": metrics["test/roc_auc"], "f1": metrics["test/f1"]},
    )


def _champion_reference(config: Config, run_id: str) -> pd.DataFrame:
    """The reference sample logged with the champion: a later rejected retraining rewrites paths.reference, but
    the champion's reference stays its own. Versions registered before it was logged fall back to the file."""
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    from optiflow.release.registry import REFERENCE_ARTIFACT

    local = config.path("reference")
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"{REFERENCE_ARTIFACT}/{local.name}", dst_path=folder
            )
        except (MlflowException, OSError):
            log.warning("run %s has no logged reference sample; using %s", run_id, local)
            return read_parquet(local)
        return read_parquet(Path(path))


def pending_batches(config: Config, batches: str | None = None) -> list[Path]:
    """The batches to check: ``batches`` (a file, or a folder; relative to the project) or paths.batches. The
    default folder not existing yet means nothing has arrived (a fresh project's scheduled run): no batch, no
    error. A ``batches`` the caller named must exist."""
    source = config.root / batches if batches else config.path("batches")
    if batches is None and not source.exists():
        return []
    return new_batches(source, read_history(config.path("monitoring_history")))


def new_batches(source: Path, history: pd.DataFrame) -> list[Path]:
    """A batch file, or the batch files of a folder (sorted by name) not yet in the history."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DataError(f"{source}: no such batch file or folder")
    seen = set(history["batch_id"]) if len(history) else set()
    files = sorted(path for path in source.iterdir() if path.is_file() and path.name.endswith(BATCH_SUFFIXES))
    return [path for path in files if batch_id(path) not in seen]


def batch_id(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".parquet", ".pq"):
        name = name.removesuffix(suffix)
    return name


def read_batch(path: Path, data: DataParams) -> pd.DataFrame:
    """The batch typed like the training data; labels are kept when the batch carries them."""
    frame = read_source(path)
    return coerce(frame, data, path, labelled=data.target in frame.columns)


def read_history(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame({column: pd.Series(dtype=object) for column in HISTORY_COLUMNS})
    history = pd.read_csv(path, dtype={"batch_id": str, "champion_version": str, "new_version": str})
    return history.reset_index(drop=True)


def append_history(path: Path, row: dict[str, Any]) -> pd.DataFrame:
    """Add one batch's row (atomically rewriting the table) and return the whole history."""
    unknown = set(row) - set(HISTORY_COLUMNS)
    if unknown:
        raise ValueError(f"unknown history columns {sorted(unknown)}")
    history = read_history(path)
    updated = pd.concat([history, pd.DataFrame([{c: row.get(c) for c in HISTORY_COLUMNS}])], ignore_index=True)
    write_with(path, lambda staging: updated.to_csv(staging, index=False))
    return updated


def history_row(
    summary: Mapping[str, Any], decision: str, reason: str, new_version: str | None, at: datetime
) -> dict[str, Any]:
    """One batch's history row from its summary (an invalid batch's carries no drift or quality figures)."""
    quality = summary.get("quality") or {}
    return {
        "batch_id": summary["batch_id"],
        "at": at.isoformat(timespec="seconds"),
        "source": summary["source"],
        "rows": summary.get("rows"),
        "rows_checked": summary.get("rows_checked"),
        "labelled_rows": summary.get("labelled_rows", 0),
        "drift_share": summary.get("drift_share"),
        "drifted_columns": ";".join(summary.get("drifted_columns") or []),
        "prediction_drift": summary.get("prediction_drift"),
        "roc_auc": quality.get("roc_auc"),
        "f1": quality.get("f1"),
        "quality_drop": summary.get("quality_drop"),
        "champion_version": summary.get("champion_version"),
        "decision": decision,
        "reason": reason,
        "new_version": new_version,
    }


def record_history(config: Config, row: dict[str, Any]) -> pd.DataFrame:
    """Append the row to the monitoring history and redraw its trend plot (history.png next to the table)."""
    history = append_history(config.path("monitoring_history"), row)
    monitor = config.params.monitor
    target = config.path("monitoring_history").with_suffix(".png")
    plot_history(history, target, monitor.drift_share, monitor.max_quality_drop)
    return history


def plot_history(history: pd.DataFrame, target: Path, drift_share: float, max_quality_drop: float) -> None:
    """Drift share and ROC AUC per batch, retrainings marked: the trend a person looks at first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(history))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 0.5 * len(history) + 3), 6), sharex=True)
    top.plot(x, history["drift_share"].astype(float), marker="o", label="share of drifted columns")
    top.plot(x, history["prediction_drift"].astype(float), marker="s", label="prediction drift score")
    top.axhline(drift_share, color="grey", linestyle="--", label=f"drift share threshold {drift_share:g}")
    retrained = history["decision"].isin(RETRAINING_DECISIONS).to_numpy()
    invalid = (history["decision"] == INVALID).to_numpy()
    for axis in (top, bottom):
        for position in x[retrained]:
            axis.axvline(position, color="tab:red", alpha=0.3)
        for position in x[invalid]:
            axis.axvline(position, color="black", alpha=0.3, linestyle=":")
    top.set_ylabel("drift")
    top.legend(loc="upper left", fontsize="small")
    top.set_title("Monitoring history (red: retraining, dotted: invalid batch)")
    bottom.plot(x, history["roc_auc"].astype(float), marker="o", label="ROC AUC on the batch")
    champion = history["roc_auc"].astype(float) + history["quality_drop"].astype(float)
    bottom.plot(x, champion, linestyle="--", label="champion's test ROC AUC")
    bottom.set_ylabel("ROC AUC")
    bottom.legend(loc="lower left", fontsize="small")
    bottom.set_xticks(x, history["batch_id"].astype(str), rotation=45, ha="right", fontsize="small")
    figure.tight_layout()
    write_with(target, lambda staging: figure.savefig(staging, format="png", dpi=100))
    plt.close(figure)


def keep_batch(config: Config, identifier: str, frame: pd.DataFrame) -> Path:
    """A validated labelled batch, kept so later retraining windows can use it."""
    target = config.path("monitored") / f"{identifier}.parquet"
    write_parquet(target, frame)
    return target


def build_retraining_dataset(config: Config, history: pd.DataFrame, current: str) -> tuple[Path, dict[str, Any]]:
    """The retraining data of the window policy, written atomically; returns its path and what went in."""
    params = config.params.monitor
    include_training, chosen = window_batches(history, current, params.window, params.last_k)
    parts = []
    if include_training:
        training, _ = load_dataset(config.source, config.params.data)
        parts.append(training)
    for identifier in chosen:
        path = config.path("monitored") / f"{identifier}.parquet"
        if not path.is_file():
            raise DataError(f"{path}: labelled batch {identifier!r} of the retraining window is missing")
        parts.append(read_parquet(path))
    if not parts:
        raise DataError(f"monitor.window {params.window!r} selected no data to retrain on")
    columns = list(parts[0].columns)
    dataset = pd.concat([part[columns] for part in parts], ignore_index=True)
    target = config.path("retraining") / f"{current}.parquet"
    write_parquet(target, dataset)
    window = {"policy": params.window, "training": include_training, "batches": chosen, "rows": len(dataset)}
    log.info("retraining dataset %s: %s", target, window)
    return target, window
