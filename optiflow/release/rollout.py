"""The release state in the registry: which version is the challenger, in which mode (shadow, canary, or direct:
no live traffic, waiting for approval), since when; and the moves that end a release (promote, abort) with who,
why and when as tags. serve-api reads the state from the registry it already polls, so there is one source of truth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from optiflow.errors import OptiflowError
from optiflow.release.registry import PROMOTION_TAG, STAGED, champion_version

log = logging.getLogger(__name__)

ReleaseMode = Literal["direct", "shadow", "canary"]
ABORTED = "aborted"  # PROMOTION_TAG of a version whose release was stopped
_PREFIX = "optiflow.release."


@dataclass(frozen=True)
class ReleaseState:
    """A running release, as the registered model's tags and the challenger alias say."""

    model_name: str
    challenger: str  # the version under release
    champion: str | None  # the version it is compared with
    mode: ReleaseMode
    share: float  # canary share (0 for shadow and direct)
    started_at: float  # unix time

    @property
    def salt(self) -> str:
        """Canary routing is fixed per release: one entity keeps one model until the release ends."""
        return f"{self.model_name}:v{self.challenger}"

    @property
    def live(self) -> bool:
        """Whether serve-api scores traffic with the challenger."""
        return self.mode != "direct"


def release_state(model_name: str, champion_alias: str, challenger_alias: str) -> ReleaseState | None:
    """The running release, or None when no version holds ``challenger_alias``."""
    from mlflow import MlflowClient

    challenger = champion_version(model_name, challenger_alias)
    if challenger is None:
        return None
    tags = MlflowClient().get_registered_model(model_name).tags
    return ReleaseState(
        model_name=model_name,
        challenger=challenger,
        champion=champion_version(model_name, champion_alias),
        mode=tags.get(f"{_PREFIX}mode", "shadow"),  # type: ignore[arg-type]
        share=float(tags.get(f"{_PREFIX}share", 0.0)),
        started_at=float(tags.get(f"{_PREFIX}started_at", 0.0)),
    )


def start_release(
    model_name: str,
    champion_alias: str,
    challenger_alias: str,
    version: str,
    mode: ReleaseMode,
    share: float,
    at: float,
) -> ReleaseState:
    """Make ``version`` the challenger in ``mode``; it must have passed every gate and not be the champion. A release
    already running for another version is replaced (that version goes back to waiting, untagged)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    outcome = client.get_model_version(model_name, version).tags.get(PROMOTION_TAG)
    if outcome not in ("promoted", STAGED):
        raise OptiflowError(
            f"{model_name} v{version} cannot be released: it did not pass its gates ({PROMOTION_TAG} = "
            f"{outcome or 'missing'})"
        )
    champion = champion_version(model_name, champion_alias)
    if champion == version:
        raise OptiflowError(f"{model_name} v{version} is already the champion ({champion_alias})")
    if champion is None:
        raise OptiflowError(f"{model_name} has no {champion_alias} to compare v{version} with; promote it instead")
    client.set_registered_model_alias(model_name, challenger_alias, version)
    for key, value in {"mode": mode, "share": share if mode == "canary" else 0.0, "started_at": at}.items():
        client.set_registered_model_tag(model_name, f"{_PREFIX}{key}", str(value))
    client.set_model_version_tag(model_name, version, PROMOTION_TAG, STAGED)
    log.info("%s v%s is the %s challenger of v%s", model_name, version, mode, champion)
    return ReleaseState(model_name, version, champion, mode, share if mode == "canary" else 0.0, at)


def end_release(
    state: ReleaseState,
    outcome: Literal["promoted", "aborted"],
    champion_alias: str,
    previous_alias: str,
    challenger_alias: str,
    record: dict[str, str],
) -> None:
    """Promote the challenger (the champion becomes ``previous``) or abort it; the challenger alias goes either way.
    ``record`` (by, reason, at, and the figures that decided) becomes ``optiflow.release.*`` tags on the version."""
    from mlflow import MlflowClient

    client = MlflowClient()
    current = champion_version(state.model_name, challenger_alias)
    if current != state.challenger:
        raise OptiflowError(
            f"{state.model_name}: the release of v{state.challenger} ended already ({challenger_alias} is now "
            f"{'v' + current if current else 'unset'})"
        )
    for key, value in {**record, "outcome": outcome}.items():
        client.set_model_version_tag(state.model_name, state.challenger, f"{_PREFIX}{key}", str(value)[:5000])
    if outcome == "promoted":
        champion = champion_version(state.model_name, champion_alias)
        if champion is not None and champion != state.challenger:
            client.set_registered_model_alias(state.model_name, previous_alias, champion)
        client.set_registered_model_alias(state.model_name, champion_alias, state.challenger)
        client.set_model_version_tag(state.model_name, state.challenger, PROMOTION_TAG, "promoted")
        client.set_model_version_tag(state.model_name, state.challenger, f"{_PREFIX}promoted_at", record.get("at", ""))
    else:
        client.set_model_version_tag(state.model_name, state.challenger, PROMOTION_TAG, ABORTED)
    client.delete_registered_model_alias(state.model_name, challenger_alias)
    log.info("%s v%s release %s: %s", state.model_name, state.challenger, outcome, record.get("reason", ""))
