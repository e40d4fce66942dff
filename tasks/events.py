"""The Prefect events Optiflow emits about a registered model, one name each: deployment triggers and the
notification automations (flows/notifications.py) match on them."""

from __future__ import annotations

from typing import Any

from optiflow.config import Config
from tasks.common import in_prefect_run

DRIFT_EVENT = "optiflow.drift.detected"  # a retraining the decision asked for; the training trigger listens to it
PERFORMANCE_EVENT = "optiflow.performance.degraded"  # the estimated (or realised) ROC AUC fell beyond its noise
RETRAIN_EVENT = "optiflow.retrain.started"  # a training run started for a reason (a drift event, a person)
REJECTED_EVENT = "optiflow.candidate.rejected"  # a registered version failed a gate, or its release was aborted
APPROVAL_EVENT = "optiflow.approval.needed"  # a release waits for a person (Prefect UI or `optiflow approve`)
PROMOTED_EVENT = "optiflow.model.promoted"  # the champion alias moved to a new version
ROLLED_BACK_EVENT = "optiflow.model.rolled-back"  # the champion alias moved back to the previous version

NOTIFIED_EVENTS = (
    DRIFT_EVENT,
    PERFORMANCE_EVENT,
    RETRAIN_EVENT,
    REJECTED_EVENT,
    APPROVAL_EVENT,
    PROMOTED_EVENT,
    ROLLED_BACK_EVENT,
)


def resource_id(model_name: str) -> str:
    return f"optiflow.model.{model_name}"


def emit(config: Config, name: str, payload: dict[str, Any]) -> str:
    """Emit ``name`` about the project's registered model, inside a Prefect run or with a Prefect server configured;
    the event id, or "not emitted" (a DVC stage with no server: nobody would receive it)."""
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL

    if not (in_prefect_run() or PREFECT_API_URL.value()):
        return "not emitted"
    model = config.params.registry.model_name
    resource = {"prefect.resource.id": resource_id(model), "prefect.resource.name": model}
    event = emit_event(event=name, resource=resource, payload=payload)
    return str(event.id) if event is not None else "not emitted"
