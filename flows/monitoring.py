"""The monitoring flow: for each new batch, validate, score with the champion, report drift, decide, and retrain.

A retraining goes through the whole training flow (every gate); the champion changes only if the challenger wins.
With a Prefect server serving the training deployment the flow emits `optiflow.drift.detected` and the
deployment's trigger starts training; on the ephemeral API (`make monitor`) it runs the training flow itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow

from flows.training import training
from optiflow.config import Config
from optiflow.errors import OptiflowError
from optiflow.monitoring.batches import pending_batches
from optiflow.monitoring.retraining import REJECTED, RETRAINED
from optiflow.preflight import load_settings
from tasks.monitoring import (
    build_window,
    check_batch,
    decide_batch,
    draw_history,
    emit_drift_event,
    emit_performance_event,
    record_batch,
    report_no_new_batches,
    retrain_mode,
)


@flow(name="monitoring", description="Check new batches for drift against the training reference and retrain.")
def monitoring(
    params_path: str = "params.yaml",
    batches: str | None = None,
    drift_share: float | None = None,
    max_quality_drop: float | None = None,
    sample_rows: int | None = None,
    retrain: Literal["auto", "event", "direct"] = "auto",
) -> list[dict[str, Any]]:
    """`batches`: a batch file, or a folder whose new files are checked in name order (default paths.batches).

    The thresholds override params.yaml `monitor:` for this run. `retrain`: auto picks event when a server serves
    the training deployment, direct otherwise. A run with no new batch completes with a "no new batches" artifact.
    """
    overrides = {
        key: value
        for key, value in {
            "monitor.drift_share": drift_share,
            "monitor.max_quality_drop": max_quality_drop,
            "monitor.sample_rows": sample_rows,
        }.items()
        if value is not None
    }
    config = load_settings(params_path, overrides)
    pending = pending_batches(config, batches)
    if not pending:
        report_no_new_batches(config, batches)
        return []
    rows = []
    try:
        for path in pending:
            rows.append(_monitor_batch(config, params_path, path, retrain))
    finally:
        draw_history(config)  # once per run, after every batch's row (an invalid batch's too)
    return rows


def _monitor_batch(
    config: Config, params_path: str, path: Path, retrain: Literal["auto", "event", "direct"]
) -> dict[str, Any]:
    """One batch: check, decide, retrain when the decision says so (by event or by running the training flow), and
    record the outcome."""
    summary = check_batch(config, path)
    verdict = decide_batch(config, summary)
    summary = {**summary, "decision_figures": verdict["figures"]}
    emit_performance_event(config, summary, verdict)
    decision, reason, new_version = verdict["action"], verdict["reason"], None
    if decision == "retrain":
        window = build_window(config, summary["batch_id"])
        if retrain_mode(retrain) == "event":
            emit_drift_event(config, summary, verdict, window)
            decision, reason = RETRAINED, f"{reason}; retraining requested by event on {window['dataset']}"
        else:
            try:
                registration = training(
                    params_path,
                    dataset=window["dataset"],
                    reason=reason,
                    batch_id=summary["batch_id"],
                    drift_share=summary["drift_share"],
                )[-1]
            except OptiflowError as exc:
                record_batch(config, summary, REJECTED, f"{reason}; retraining failed: {exc}")
                raise
            decision, new_version = registration["decision"]["outcome"], registration["version"]
            reason = f"{reason}; retrained on {window['dataset']}: v{new_version} {decision}"
    return record_batch(config, summary, decision, reason, new_version)
