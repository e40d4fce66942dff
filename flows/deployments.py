"""Prefect deployments served by `optiflow serve` / `make serve`: training (nightly, and on every drift event),
monitoring (hourly over the batches folder), batch scoring (hourly over the batches folder, or on demand for a
file) and release (hourly), each with typed parameters the Prefect UI shows as a form. A scheduled run with nothing
new completes and says so in an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.events import DeploymentEventTrigger

from flows.monitoring import monitoring
from flows.notifications import create_automations
from flows.release import release
from flows.scoring import scoring
from flows.training import training
from tasks.events import DRIFT_EVENT

TRAINING_CRON = "0 2 * * *"  # nightly at 02:00
MONITORING_CRON = "0 * * * *"  # hourly
SCORING_CRON = "30 * * * *"  # hourly, half past: the new batches of paths.batches
RELEASE_CRON = "45 * * * *"  # hourly: review a running release, or watch a newly promoted champion

# What the drift event carries becomes the training run's parameters (see tasks/monitoring.py emit_drift_event).
EVENT_PARAMETERS = {
    "dataset": "{{ event.payload.dataset }}",
    "batch_id": "{{ event.payload.batch_id }}",
    "drift_share": "{{ event.payload.drift_share }}",
    "reason": "{{ event.payload.reason }}",
}


def drift_trigger(params_path: str) -> DeploymentEventTrigger:
    return DeploymentEventTrigger(
        name="retrain-on-drift",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": "optiflow.model.*"},
        parameters={"params_path": params_path, **EVENT_PARAMETERS},
    )


def deployments(params_path: str = "params.yaml", schedules: bool = True) -> list[Any]:
    """The deployments, their parameters defaulting to this project's params file (an absolute path, so runs
    started from the UI find it whatever the serving process's folder)."""
    params = str(Path(params_path).resolve())
    return [
        training.to_deployment(
            name="training",
            cron=TRAINING_CRON if schedules else None,
            parameters={"params_path": params},
            triggers=[drift_trigger(params)],
            description="Train, gate and register; runs nightly and whenever monitoring detects drift.",
            tags=["optiflow", "training"],
        ),
        monitoring.to_deployment(
            name="monitoring",
            cron=MONITORING_CRON if schedules else None,
            parameters={"params_path": params},
            description="Check new batches (paths.batches) for drift; retrain through the training deployment.",
            tags=["optiflow", "monitoring"],
        ),
        scoring.to_deployment(
            name="scoring",
            cron=SCORING_CRON if schedules else None,
            parameters={"params_path": params},
            description="Score the new batches (paths.batches) into paths.scored, or the file a run names, with the "
            "champion (or an alias or version); bad rows to rejects.",
            tags=["optiflow", "scoring"],
        ),
        release.to_deployment(
            name="release",
            cron=RELEASE_CRON if schedules else None,
            parameters={"params_path": params},
            description="Review the challenger on live traffic: promote (after approval when release.approval is "
            "approve), wait or abort; roll back a newly promoted champion that degrades.",
            tags=["optiflow", "release"],
        ),
    ]


def serve_deployments(params_path: str = "params.yaml", schedules: bool = True) -> None:
    """Create the notification automations (release.webhook_url), then serve until interrupted (SIGINT/SIGTERM);
    stop this before the Prefect server."""
    from prefect import serve

    from optiflow.preflight import load_settings

    create_automations(load_settings(params_path))
    serve(*deployments(params_path, schedules), limit=3)
