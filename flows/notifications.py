"""Notifications through Prefect automations: one automation per Optiflow event (tasks/events.py) that POSTs it to
the webhook block named by release.webhook_url. `optiflow serve` (`make serve`) creates them, replacing any of the
same name, so they live on the Prefect server like any other automation (`prefect automation ls`, the UI), and
any other notification block (Slack, email) can be wired to the same events there."""

from __future__ import annotations

import contextlib

from optiflow.config import Config
from tasks.events import NOTIFIED_EVENTS, resource_id

WEBHOOK_BLOCK = "optiflow-notifications"
# What the receiver gets: the event, the model, when, and the event's own figures (version, reason, ...).
PAYLOAD = (
    '{"event": "{{ event.event }}", "id": "{{ event.id }}", "occurred": "{{ event.occurred }}", '
    '"model": "{{ event.resource.name }}", "payload": {{ event.payload | tojson }}}'
)


def automation_name(event: str) -> str:
    return f"optiflow-notify-{event}"


def create_automations(config: Config) -> list[str]:
    """The notification automations for release.webhook_url (none when it is unset); their names."""
    from prefect.automations import Automation, CallWebhook, EventTrigger
    from prefect.blocks.webhook import Webhook

    url = config.params.release.webhook_url
    if not url:
        return []
    hook = Webhook(url=url, headers={"Content-Type": "application/json"}).save(WEBHOOK_BLOCK, overwrite=True)
    names = []
    for event in NOTIFIED_EVENTS:
        name = automation_name(event)
        with contextlib.suppress(ValueError):  # ValueError: not there yet
            Automation.read(name=name).delete()
        Automation(
            name=name,
            description=f"POST {event} about {config.params.registry.model_name} to the notification webhook",
            trigger=EventTrigger(
                expect={event},
                match={"prefect.resource.id": resource_id(config.params.registry.model_name)},
                posture="Reactive",
                threshold=1,
            ),
            actions=[CallWebhook(block_document_id=hook, payload=PAYLOAD)],
        ).create()
        names.append(name)
    return names
