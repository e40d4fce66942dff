"""Monitoring tasks: check one batch (validate, score, drift report), decide, build the retraining data, ask for a
retraining by event, and record the outcome. Thin shells over optiflow.drift / decision / monitor."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import task

from optiflow.config import Config
from optiflow.data.sampling import sample_rows
from optiflow.data.schema import resolve_schema
from optiflow.data.validation import report_html, validate_frame
from optiflow.errors import ValidationFailed
from optiflow.io import atomic_dir, write_json, write_text
from optiflow.monitoring.batches import (
    append_history,
    batch_id,
    build_retraining_dataset,
    keep_batch,
    load_champion,
    plot_history,
    read_batch,
    read_history,
)
from optiflow.monitoring.drift import batch_quality, check_drift, label_array, save_snapshot
from optiflow.monitoring.retraining import INVALID, Signals, decide
from tasks.common import publish_markdown, stage_logger

DRIFT_EVENT = "optiflow.drift.detected"
TRAINING_DEPLOYMENT = "training/training"  # flow name / deployment name, as flows/deployments.py serves it


def resource_id(model_name: str) -> str:
    return f"optiflow.model.{model_name}"


@task(name="check-batch")
def check_batch(config: Config, path: Path) -> dict[str, Any]:
    """Validate with the training suite, score with the champion, and write the Evidently report for one batch."""
    params, data, log = config.params, config.params.data, stage_logger()
    identifier = batch_id(path)
    folder = config.path("monitoring") / identifier
    frame = read_batch(path, data)
    schema = resolve_schema(frame, data)
    validation = validate_frame(frame, schema, data, params.validation, str(path), batch=True)
    if not validation.success:
        with atomic_dir(folder) as staging:
            write_json(staging / "validation.json", validation.to_dict())
            write_text(staging / "validation.html", report_html(validation))
        _record_invalid(config, identifier, path, len(frame), validation.failure_message())
        raise ValidationFailed(
            f"{validation.failure_message()}\nFull report: {folder.relative_to(config.root)}/validation.html. "
            "The batch was not used: no retraining, the champion is unchanged."
        )
    champion = load_champion(config)
    reference = champion.reference
    checked = sample_rows(frame, params.monitor.sample_rows, params.seed).reset_index(drop=True)
    features = list(schema.features)
    current_scores = champion.scores(checked[features])
    labels = label_array(checked, data)
    quality = None if labels is None else batch_quality(labels, current_scores, champion.threshold, champion.test)
    result, snapshot = check_drift(
        reference,
        checked,
        schema,
        params.monitor,
        reference_scores=champion.scores(reference[features]),
        current_scores=current_scores,
        quality=quality,
        rows=len(frame),
    )
    labelled_rows = 0 if labels is None else len(frame)
    summary = {
        "batch_id": identifier,
        "source": str(path),
        "labelled_rows": labelled_rows,
        "champion_version": champion.version,
        "report": str(folder / "drift.html"),
        **result.to_dict(),
    }
    with atomic_dir(folder) as staging:
        write_json(staging / "validation.json", validation.to_dict())
        write_text(staging / "validation.html", report_html(validation))
        save_snapshot(snapshot, staging / "drift.html", staging / "drift.json")
        write_json(staging / "summary.json", summary)
    if labelled_rows:
        keep_batch(config, identifier, frame)
    log.info(
        "batch %s: %d rows, drift share %.3f (%s), prediction drift %s, quality drop %s",
        identifier,
        len(frame),
        result.drift_share,
        ", ".join(result.drifted_columns) or "no column drifted",
        _fmt(result.prediction_drift),
        _fmt(result.quality_drop),
    )
    return summary


@task(name="decide")
def decide_batch(config: Config, summary: dict[str, Any]) -> dict[str, Any]:
    signals = Signals(
        drift_share=summary["drift_share"],
        drifted_columns=tuple(summary["drifted_columns"]),
        prediction_drift=summary["prediction_drift"],
        prediction_drifted=summary["prediction_drifted"],
        quality_drop=summary["quality_drop"],
        labelled_rows=summary["labelled_rows"],
    )
    history = read_history(config.path("monitoring_history"))
    verdict = decide(signals, history, config.params.monitor, datetime.now(UTC))
    stage_logger().info("batch %s: %s (%s)", summary["batch_id"], verdict.action, verdict.reason)
    return {"action": verdict.action, "reason": verdict.reason, "severe": verdict.severe}


@task(name="build-retraining-data")
def build_window(config: Config, identifier: str) -> dict[str, Any]:
    history = read_history(config.path("monitoring_history"))
    path, window = build_retraining_dataset(config, history, identifier)
    return {"dataset": str(path.relative_to(config.root)), **window}


def retrain_mode(requested: Literal["auto", "event", "direct"]) -> Literal["event", "direct"]:
    """auto: by event when a Prefect server serves the training deployment, otherwise run training directly."""
    if requested != "auto":
        return requested
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return "direct"  # the ephemeral API: nothing listens for events
    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(TRAINING_DEPLOYMENT)
    except Exception:  # no server answering, or no training deployment served: nobody would act on the event
        return "direct"
    return "event"


@task(name="emit-drift-event")
def emit_drift_event(config: Config, summary: dict[str, Any], verdict: dict[str, Any], window: dict[str, Any]) -> str:
    """Ask for a retraining: the training deployment's trigger turns this event into a run with these figures."""
    from prefect.events import emit_event

    name = config.params.registry.model_name
    event = emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": resource_id(name), "prefect.resource.name": name},
        payload={
            "batch_id": summary["batch_id"],
            "drift_share": summary["drift_share"],
            "drifted_columns": summary["drifted_columns"],
            "prediction_drift": summary["prediction_drift"],
            "quality_drop": summary["quality_drop"],
            "dataset": window["dataset"],
            "reason": verdict["reason"],
        },
    )
    stage_logger().info("emitted %s for batch %s", DRIFT_EVENT, summary["batch_id"])
    return str(event.id) if event is not None else "not emitted"


@task(name="record-batch")
def record_batch(
    config: Config, summary: dict[str, Any], decision: str, reason: str, new_version: str | None = None
) -> dict[str, Any]:
    """One history row, the trend plot, an MLflow run with the reports, and a Prefect artifact with the verdict."""
    row = _history_row(summary, decision, reason, new_version)
    history = append_history(config.path("monitoring_history"), row)
    _plot(config, history)
    _log_to_mlflow(config, summary, decision, reason)
    publish_markdown(f"monitoring-{_artifact_key(summary['batch_id'])}", _markdown(summary, decision, reason), reason)
    return row


def _record_invalid(config: Config, identifier: str, path: Path, rows: int, message: str) -> None:
    summary = {"batch_id": identifier, "source": str(path), "rows": rows, "labelled_rows": 0}
    history = append_history(
        config.path("monitoring_history"), _history_row(summary, INVALID, message.splitlines()[0], None)
    )
    _plot(config, history)


def _history_row(summary: dict[str, Any], decision: str, reason: str, new_version: str | None) -> dict[str, Any]:
    quality = summary.get("quality") or {}
    return {
        "batch_id": summary["batch_id"],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
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


def _plot(config: Config, history) -> None:
    monitor = config.params.monitor
    target = config.path("monitoring_history").with_suffix(".png")
    plot_history(history, target, monitor.drift_share, monitor.max_quality_drop)


def _log_to_mlflow(config: Config, summary: dict[str, Any], decision: str, reason: str) -> None:
    import mlflow

    from optiflow.release.registry import connect

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


def _markdown(summary: dict[str, Any], decision: str, reason: str) -> str:
    quality = summary.get("quality") or {}
    rows = [
        ("rows (checked)", f"{summary['rows']} ({summary['rows_checked']})"),
        ("share of drifted columns", f"{summary['drift_share']:.3f}"),
        ("drifted columns", ", ".join(summary["drifted_columns"]) or "none"),
        ("prediction drift", _fmt(summary["prediction_drift"])),
        ("ROC AUC on the batch", _fmt(quality.get("roc_auc"))),
        ("champion's test ROC AUC", _fmt(quality.get("champion_roc_auc"))),
        ("F1 on the batch", _fmt(quality.get("f1"))),
        ("champion", f"v{summary['champion_version']}"),
    ]
    table = "| figure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    link = Path(summary["report"]).resolve().as_uri()
    return (
        f"# Batch `{summary['batch_id']}`: **{decision}**\n\n{reason}\n\n{table}\n\n"
        f"Evidently report: [{Path(summary['report']).name}]({link})"
    )


def _artifact_key(identifier: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(ch if ch.isalnum() else "-" for ch in identifier.lower()).strip("-")[:60] or "batch"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
