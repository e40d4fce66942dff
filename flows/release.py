"""The release flow: review the challenger on live traffic, then promote it (after a person's approval when
release.approval is `approve`), keep it waiting, or abort it; with no release running, watch a champion a release
promoted and roll it back when it degrades.

Approval pauses this flow run with a form (approve / reject, reviewer, comment) that the Prefect UI shows; `optiflow
approve|reject <flow-run>` answers it through the same API. No answer within release.approval_timeout_hours rejects.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from optiflow.config import Config
from optiflow.preflight import load_settings
from optiflow.release.registry import store_exists
from optiflow.release.rollout import ReleaseState
from tasks.common import stage_logger
from tasks.events import APPROVAL_EVENT, emit
from tasks.release import (
    approval_request,
    current_release,
    finish_release,
    review_release,
    watch_new_champion,
)


class Approval(RunInput):
    """The form a reviewer fills in (Prefect UI, or `optiflow approve|reject`)."""

    approve: bool
    reviewer: str
    comment: str = ""


@flow(name="release", description="Promote, keep waiting or abort the challenger on live traffic; roll back.")
def release(params_path: str = "params.yaml") -> dict[str, Any]:
    config = load_settings(params_path)
    if not store_exists(config):
        return {"action": "keep", "reason": "nothing is registered yet"}
    state = current_release(config)
    if state is None:
        return watch_new_champion(config)
    review = review_release(config, state)
    if review["action"] == "wait":
        return review
    if review["action"] == "promote" and config.params.release.approval == "approve":
        return {**review, "outcome": ask_for_approval(config, state, review)}
    outcome = "promoted" if review["action"] == "promote" else "aborted"
    return {
        **review,
        "outcome": finish_release(config, state, outcome, review["reason"], "release flow", review["figures"]),
    }


def ask_for_approval(config: Config, state: ReleaseState, review: dict[str, Any]) -> str:
    """Pause until a person decides; who, when and why go on the version. A timeout rejects (the run then ends
    Failed, as Prefect marks a pause never resumed)."""
    from prefect.runtime import flow_run

    timeout = round(config.params.release.approval_timeout_hours * 3600)
    emit(
        config, APPROVAL_EVENT, {"version": state.challenger, "flow_run": str(flow_run.id), "reason": review["reason"]}
    )
    description = approval_request(config, state, review, timeout)
    stage_logger().warning(
        "release of v%s waits for approval: approve in the Prefect UI or `optiflow approve %s`",
        state.challenger,
        flow_run.id,
    )
    try:
        answer = pause_flow_run(
            wait_for_input=Approval.with_initial_data(description=description, approve=False),
            timeout=timeout,
            poll_interval=2,
            key=f"approve-v{state.challenger}",
        )
    except FlowPauseTimeout:
        return finish_release(config, state, "aborted", f"no approval within {timeout} s", "timeout", review["figures"])
    outcome = "promoted" if answer.approve else "aborted"
    reason = f"{'approved' if answer.approve else 'rejected'} by {answer.reviewer}: {answer.comment or 'no comment'}"
    return finish_release(config, state, outcome, reason, answer.reviewer, review["figures"])
