"""Monitoring tasks: check one batch, decide, build the retraining data, ask for a retraining by event, and record
the outcome. Thin shells over optiflow.monitoring (check, retraining, batches) and release.tracking; what needs
Prefect (events, artifacts, whether a server serves the training deployment) stays here."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import task

from optiflow.config import Config
from optiflow.monitoring import batches, check
from optiflow.monitoring.batches import build_retraining_dataset, history_row, read_history, record_history
from optiflow.monitoring.decision import decide_on_impact
from optiflow.monitoring.performance import performance_impact
from optiflow.release.tracking import log_monitoring_run
from tasks.common import publish_markdown, stage_logger
from tasks.events import DRIFT_EVENT, PERFORMANCE_EVENT, emit

TRAINING_DEPLOYMENT = "training/training"  # flow name / deployment name, as flows/deployments.py serves it


@task(name="check-batch")
def check_batch(config: Config, path: Path) -> dict[str, Any]:
    """Validate with the batch suite, score with the champion, and write the Evidently report for one batch."""
    summary = check.check_batch(config, path)
    drift = summary.drift
    stage_logger().info(
        "batch %s: %d rows, drift share %.3f (%s), prediction drift %s, quality drop %s",
        summary.batch_id,
        drift.rows,
        drift.drift_share,
        ", ".join(drift.drifted_columns) or "no column drifted",
        _fmt(drift.prediction_drift),
        _fmt(drift.quality_drop),
    )
    return summary.to_dict()


@task(name="decide")
def decide_batch(config: Config, summary: dict[str, Any]) -> dict[str, Any]:
    """The cost-aware decision (monitor.trigger) on the batch's performance impact, with the figures it weighed."""
    history = read_history(config.path("monitoring_history"))
    monitor = config.params.monitor
    impact = performance_impact(summary["performance"], monitor.noise_z)
    verdict = decide_on_impact(check.signals(summary), impact, history, monitor, datetime.now(UTC))
    stage_logger().info("batch %s: %s (%s)", summary["batch_id"], verdict.action, verdict.reason)
    return {"action": verdict.action, "reason": verdict.reason, "severe": verdict.severe, "figures": verdict.figures}


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
    event = emit(
        config,
        DRIFT_EVENT,
        {
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
    return event


@task(name="emit-performance-event")
def emit_performance_event(config: Config, summary: dict[str, Any], verdict: dict[str, Any]) -> str | None:
    """Say that the model got worse (estimated before labels, realised after), beside the drift figures; None when
    the drop is within its noise."""
    figures = verdict["figures"]
    if not figures.get("significant"):
        return None
    event = emit(
        config,
        PERFORMANCE_EVENT,
        {
            "batch_id": summary["batch_id"],
            **{key: figures[key] for key in ("source", "metric", "baseline", "value", "drop", "standard_error")},
            "expected_loss": figures["expected_loss"],
            "shift": (summary.get("diagnosis") or {}).get("shift"),
            "drift_share": summary["drift_share"],
            "decision": verdict["action"],
        },
    )
    stage_logger().info("emitted %s for batch %s", PERFORMANCE_EVENT, summary["batch_id"])
    return event


@task(name="record-batch")
def record_batch(
    config: Config, summary: dict[str, Any], decision: str, reason: str, new_version: str | None = None
) -> dict[str, Any]:
    """One history row, an MLflow run with the reports, and a Prefect artifact with the verdict."""
    row = history_row(summary, decision, reason, new_version, datetime.now(UTC))
    record_history(config, row)
    log_monitoring_run(config, summary, decision, reason)
    publish_markdown(
        f"monitoring-{_artifact_key(summary['batch_id'])}", check.batch_markdown(summary, decision, reason), reason
    )
    return row


@task(name="draw-history")
def draw_history(config: Config) -> str | None:
    """The history's trend plot, drawn once after the run's batches (an invalid batch's row included)."""
    target = batches.draw_history(config)
    return str(target.relative_to(config.root)) if target else None


NO_NEW_BATCHES = "no new batches"


@task(name="no-new-batches")
def report_no_new_batches(config: Config, batches: str | None) -> str:
    """A scheduled run with nothing to check completes and says so, in the log and as a Prefect artifact."""
    source = batches or config.params.paths.batches
    seen = len(read_history(config.path("monitoring_history")))
    message = f"{NO_NEW_BATCHES} in {source} ({seen} checked before): nothing to check, nothing retrained"
    stage_logger().info(message)
    publish_markdown("monitoring-no-new-batches", f"# Monitoring\n\n{message}.\n", message)
    return message


def _artifact_key(identifier: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(ch if ch.isalnum() else "-" for ch in identifier.lower()).strip("-")[:60] or "batch"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
