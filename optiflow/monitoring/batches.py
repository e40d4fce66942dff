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
from optiflow.data.keys import KEY_COLUMN, with_keys
from optiflow.errors import DataError, OptiflowError
from optiflow.io import read_parquet, write_parquet, write_with
from optiflow.monitoring.retraining import INVALID, QUARANTINED, RETRAINING_DECISIONS, window_batches
from optiflow.monitoring.window import retraining_set

log = logging.getLogger(__name__)

PERFORMANCE_COLUMNS = (  # estimated beside realised per batch, the band of the estimate, the diagnosed shift
    "estimated_roc_auc",
    "estimated_roc_auc_low",
    "estimated_roc_auc_high",
    "realised_roc_auc",
    "estimated_accuracy",
    "realised_accuracy",
    "estimated_f1",
    "realised_f1",
    "estimated_positive_rate",
    "realised_positive_rate",
    "calibration_holds",
    "shift",
    "expected_loss",
)
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
    *PERFORMANCE_COLUMNS,
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
    reference: pd.DataFrame  # the reference sample of the champion's own training run (holdout rows)
    threshold: float
    test: dict[str, float]  # roc_auc, f1 on the champion's test split
    seen: frozenset[str] | None = None  # keys of the rows it learnt from; None: not recorded (older versions)

    def scores(self, features: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict_proba(features))[:, 1]

    def unseen(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` the champion never learnt from (all of them when it kept no record)."""
        if self.seen is None or KEY_COLUMN not in frame.columns:
            return frame
        return frame[~frame[KEY_COLUMN].isin(self.seen)].reset_index(drop=True)


def load_champion(config: Config) -> Champion:
    """The one place the champion is loaded (pinned to the version the alias names now), every file verified
    against the sha256 recorded at registration before anything is loaded.

    A monitoring run checks batch after batch with the same champion: the version loaded last in this process is
    reused while the alias still names it (same store, version and run), so each batch costs no second download,
    verification and load; a promotion in between names another version, which is loaded."""
    from mlflow import MlflowClient

    from optiflow.release.registry import champion_version, connect

    uri = connect(config, create=False)
    name, alias = config.params.registry.model_name, config.params.registry.champion_alias
    version = champion_version(name, alias)
    if version is None:
        raise OptiflowError(f"{name}: no version holds the alias {alias!r}; train one first (`optiflow train`)")
    record = MlflowClient().get_model_version(name, version)
    key = (uri, name, str(version), record.run_id)
    if key not in _LAST_CHAMPION:
        _LAST_CHAMPION.clear()
        _LAST_CHAMPION[key] = _load_version(config, name, str(version), record.run_id)
    return _LAST_CHAMPION[key]


_LAST_CHAMPION: dict[tuple[str, str, str, str], Champion] = {}  # at most one: the champion loaded last


def _load_version(config: Config, name: str, version: str, run_id: str) -> Champion:
    from mlflow import MlflowClient

    from optiflow.release.registry import load_registered
    from optiflow.release.tracking import seen_keys

    metrics = MlflowClient().get_run(run_id).data.metrics
    loaded = load_registered(name, version=version)
    try:
        seen = seen_keys(run_id)
    except Exception:  # a version registered before rows were keyed: its quality is measured on every row
        log.warning("%s v%s kept no record of the rows it learnt from", name, version)
        seen = None
    return Champion(
        name=name,
        version=version,
        model=loaded.model,
        reference=_champion_reference(config, run_id),
        threshold=loaded.spec.threshold,
        test={"roc_auc": metrics["test/roc_auc"], "f1": metrics["test/f1"]},
        seen=seen,
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
    """The batch typed like the training data and keyed (keys it carries are kept); labels are kept when the batch
    carries them."""
    frame = read_source(path)
    return with_keys(coerce(frame, data, path, labelled=data.target in frame.columns), data)


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
        **performance_columns(summary),
        "champion_version": summary.get("champion_version"),
        "decision": decision,
        "reason": reason,
        "new_version": new_version,
    }


def performance_columns(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The history's estimated and realised figures of a batch summary (empty figures for an invalid batch)."""
    performance, diagnosis = summary.get("performance"), summary.get("diagnosis") or {}
    if not performance:
        return {column: None for column in PERFORMANCE_COLUMNS}
    estimated, realised = performance["estimated"], performance.get("realised") or {}
    checks = [performance["reference_calibration"], performance.get("batch_calibration")]
    row: dict[str, Any] = {
        "estimated_roc_auc_low": estimated["roc_auc"]["low"],
        "estimated_roc_auc_high": estimated["roc_auc"]["high"],
        "calibration_holds": all(check["holds"] for check in checks if check),
        "shift": diagnosis.get("shift"),
        "expected_loss": (summary.get("decision_figures") or {}).get("expected_loss"),
    }
    for metric in ("roc_auc", "accuracy", "f1", "positive_rate"):
        row[f"estimated_{metric}"] = estimated[metric]["estimate"]
        row[f"realised_{metric}"] = realised.get(metric)
    return row


def record_history(config: Config, row: dict[str, Any]) -> pd.DataFrame:
    """Append the row to the monitoring history; its trend plot is drawn once per run (draw_history)."""
    return append_history(config.path("monitoring_history"), row)


def draw_history(config: Config) -> Path | None:
    """Redraw the trend plot of the whole history (history.png next to the table); None while it is empty.

    Once per monitoring run, after its batches: a plot per batch redrew the growing history N times, O(N^2)."""
    history = read_history(config.path("monitoring_history"))
    if history.empty:
        return None
    monitor = config.params.monitor
    target = config.path("monitoring_history").with_suffix(".png")
    plot_history(history, target, monitor.drift_share, monitor.max_quality_drop)
    return target


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
    invalid = history["decision"].isin((INVALID, QUARANTINED)).to_numpy()
    for axis in (top, bottom):
        for position in x[retrained]:
            axis.axvline(position, color="tab:red", alpha=0.3)
        for position in x[invalid]:
            axis.axvline(position, color="black", alpha=0.3, linestyle=":")
    top.set_ylabel("drift")
    top.legend(loc="upper left", fontsize="small")
    top.set_title("Monitoring history (red: retraining, dotted: invalid or quarantined batch)")
    bottom.plot(x, history["roc_auc"].astype(float), marker="o", label="ROC AUC on the batch (realised)")
    if "estimated_roc_auc" in history.columns:
        estimated = history["estimated_roc_auc"].astype(float)
        bottom.plot(x, estimated, marker="^", label="estimated ROC AUC (no labels)")
        low, high = history["estimated_roc_auc_low"].astype(float), history["estimated_roc_auc_high"].astype(float)
        bottom.fill_between(x, low, high, alpha=0.2, label="95% band of the estimate")
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


def set_history_decision(config: Config, identifier: str, decision: str, note: str, labelled_rows: int) -> None:
    """Change a batch's decision in the history (a person released or dropped it), its reason extended by ``note``
    and its labelled rows set (an invalid batch was recorded with none); a batch the history lacks gets a row."""
    path = config.path("monitoring_history")
    history = read_history(path)
    rows = history.index[history["batch_id"] == identifier]
    if not len(rows):
        append_history(
            path, {"batch_id": identifier, "decision": decision, "reason": note, "labelled_rows": labelled_rows}
        )
        return
    reason = history.loc[rows[-1], "reason"]
    reason = f"{reason}; {note}" if isinstance(reason, str) else note
    history.loc[rows[-1], ["decision", "reason", "labelled_rows"]] = [decision, reason, labelled_rows]
    write_with(path, lambda staging: history.to_csv(staging, index=False))


def build_retraining_dataset(config: Config, history: pd.DataFrame, current: str) -> tuple[Path, dict[str, Any]]:
    """The retraining set of the window policy (optiflow.monitoring.window: roles by key and by time, every key
    once), written atomically; returns its path and what went in."""
    params = config.params.monitor
    include_training, chosen = window_batches(history, current, params.window, params.last_k)
    batches = []
    for identifier in chosen:
        path = config.path("monitored") / f"{identifier}.parquet"
        if not path.is_file():
            raise DataError(f"{path}: labelled batch {identifier!r} of the retraining window is missing")
        batches.append((identifier, read_parquet(path)))
    source, _ = load_dataset(config.source, config.params.data)
    built = retraining_set(source, batches, config.params.data, config.params.split, include_training)
    target = config.path("retraining") / f"{current}.parquet"
    write_parquet(target, built.frame)
    window = {"policy": params.window, "training": include_training, "batches": chosen, **built.summary()}
    log.info("retraining dataset %s: %s", target, window)
    return target, window
