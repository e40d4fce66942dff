"""Release tasks: read the release from the registry, review it on the logged traffic, end it (promote or abort),
and watch a newly promoted champion. Thin shells over optiflow.serving.live_release and optiflow.release.rollout;
the figures behind every verdict go to reports/release, the version's tags and a Prefect artifact."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prefect import task

from optiflow.config import Config
from optiflow.io import write_json, write_text
from optiflow.release.registry import Rollback, champion_version, connect, registry_lock, rollback
from optiflow.release.rollout import ReleaseState, end_release, release_state
from optiflow.serving.live_release import (
    compare_live,
    decide_release,
    status_html,
    status_markdown,
    watch_champion,
)
from optiflow.serving.prediction_log import CHALLENGER, CHAMPION, opened
from tasks.common import publish_markdown, stage_logger
from tasks.events import PROMOTED_EVENT, REJECTED_EVENT, ROLLED_BACK_EVENT, emit


def current_release(config: Config) -> ReleaseState | None:
    registry = config.params.registry
    connect(config, create=False)
    return release_state(registry.model_name, registry.champion_alias, config.params.release.challenger_alias)


@task(name="review-release")
def review_release(config: Config, state: ReleaseState) -> dict[str, Any]:
    """The paired live comparison and the verdict (promote / wait / abort), written to reports/release."""
    with opened(config) as prediction_log:
        log = prediction_log.read(since=state.started_at)
    comparison = compare_live(log, state, config.params.gates.champion, config.params.monitor.estimate_draws)
    hours = (time.time() - state.started_at) / 3600
    verdict = decide_release(
        comparison, config.params.release, config.params.gates.champion, config.params.monitor.noise_z, hours
    )
    folder = config.path("release")
    write_text(folder / "status.html", status_html(state, comparison, verdict))
    review = {"action": verdict.action, "reason": verdict.reason, "figures": verdict.figures, **comparison.to_dict()}
    write_json(folder / "status.json", review)
    markdown = status_markdown(state, comparison, verdict)
    publish_markdown("release-status", markdown, "Champion and challenger on live traffic, and the verdict")
    stage_logger().info("release of v%s: %s (%s)", state.challenger, verdict.action, verdict.reason)
    return {"markdown": markdown, **review}


@task(name="end-release")
def finish_release(config: Config, state: ReleaseState, outcome: str, reason: str, by: str, figures: dict) -> str:
    """Promote or abort the challenger under the registry lock; its tags say who, why, when and on what figures."""
    registry, release = config.params.registry, config.params.release
    at = datetime.now(UTC).isoformat(timespec="seconds")
    record = {"by": by, "reason": reason, "at": at, "figures": _compact(figures)}
    connect(config, create=False, writing=True)
    with registry_lock(config.root):
        end_release(state, outcome, registry.champion_alias, registry.previous_alias, release.challenger_alias, record)
    payload = {"version": state.challenger, "champion_version": state.champion, "reason": reason, "by": by}
    emit(config, PROMOTED_EVENT if outcome == "promoted" else REJECTED_EVENT, payload)
    decision = {"version": state.challenger, "outcome": outcome, **record}
    write_json(config.path("release") / "decision.json", decision)
    write_json(config.path("runs") / f"v{state.challenger}" / "release.json", decision)  # beside its run report
    stage_logger().info("release of v%s %s by %s: %s", state.challenger, outcome, by, reason)
    return outcome


@task(name="watch-champion")
def watch_new_champion(config: Config) -> dict[str, Any]:
    """Roll back a champion a release promoted within release.watch_hours when it degrades against itself during
    its release (errors, or an estimated or realised ROC AUC drop beyond its noise)."""
    from mlflow import MlflowClient

    registry, release = config.params.registry, config.params.release
    connect(config, create=False)
    champion = champion_version(registry.model_name, registry.champion_alias)
    previous = champion_version(registry.model_name, registry.previous_alias)
    if champion is None or previous is None:
        return {"action": "keep", "reason": "no release-promoted champion with a previous version to return to"}
    tags = MlflowClient().get_model_version(registry.model_name, champion).tags
    promoted_at = tags.get("optiflow.release.promoted_at")
    if promoted_at is None:
        return {"action": "keep", "reason": f"v{champion} was not promoted by a release: nothing to compare it with"}
    since = datetime.fromisoformat(promoted_at).timestamp()
    if time.time() - since > release.watch_hours * 3600:
        return {"action": "keep", "reason": f"v{champion} was promoted over release.watch_hours ago"}
    with opened(config) as prediction_log:
        log = prediction_log.read(versions=[champion])
    before = log[(log["at"] < since) & (log["role"] == CHALLENGER)]
    after = log[(log["at"] >= since) & (log["role"] == CHAMPION)]
    verdict = watch_champion(
        before, after, release, config.params.monitor.noise_z, config.params.monitor.estimate_draws
    )
    watched = {"action": verdict.action, "reason": verdict.reason, "figures": verdict.figures, "version": champion}
    write_json(config.path("release") / "watch.json", watched)
    if verdict.action == "rollback":
        roll_back_champion(config, "release flow", verdict.reason)
    stage_logger().info("champion v%s: %s (%s)", champion, verdict.action, verdict.reason)
    return watched


def _compact(figures: dict[str, Any]) -> str:
    import json

    return json.dumps(figures, default=str, separators=(",", ":"))


def approval_request(config: Config, state: ReleaseState, review: dict[str, Any], timeout: int) -> str:
    """What the reviewer reads above the form: the gate report, the live comparison and where the model card is."""
    from mlflow import MlflowClient

    gates = MlflowClient().get_model_version(state.model_name, state.challenger).tags.get("optiflow.gates", "-")
    report = config.path("runs") / f"v{state.challenger}" / "run_report.html"
    return (
        f"{review['markdown']}\n\n## Gates (offline)\n\n```\n{gates}\n```\n\nModel card and run report: "
        f"`{report.relative_to(config.root)}`, and the version's description in the MLflow registry.\n\nApprove to "
        f"make v{state.challenger} champion; reject to end its release. No answer within {timeout} s rejects."
    )


def roll_back_champion(config: Config, by: str, reason: str) -> Rollback:
    """Give the champion alias back to `previous` under the registry lock, and say so with the rolled-back event
    (the notification automations forward it): the one rollback of the CLI and the release flow."""
    registry = config.params.registry
    connect(config, create=False, writing=True)
    with registry_lock(config.root):
        done = rollback(
            registry.model_name,
            registry.champion_alias,
            registry.previous_alias,
            by,
            reason,
            datetime.now(UTC).isoformat(timespec="seconds"),
        )
    payload = {"from_version": done.rolled_back, "to_version": done.restored, "reason": reason, "by": by}
    emit(config, ROLLED_BACK_EVENT, payload)
    return done
