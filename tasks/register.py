"""register: log the pipeline run to MLflow, register the selected model, and promote it only past every gate
(optiflow.release.promotion: the champion is read, compared on the holdout by a paired test and replaced under the
registry lock, aliases last).

Each registered version gets its own report folder (paths.runs/vN); the champion's run report (paths.run_report)
is replaced only when this run's version is promoted, so a rejected run never hides the champion's page.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from optiflow.config import Config
from optiflow.io import atomic_dir, read_json, read_parquet, write_json, write_text
from optiflow.release.promotion import PromotionInputs, decision_markdown, register_candidate
from optiflow.release.registry import Registration
from tasks.common import StageResult, publish_markdown, stage_logger, stage_task
from tasks.events import PROMOTED_EVENT, REJECTED_EVENT, emit


def compression_report(config: Config) -> dict[str, Any]:
    """The compress stage's report (every variant's size, latency and verdict), when it belongs to the selection in
    models/compressed. It holds this machine's timings, so it is no DVC output: a compress stage DVC restored from
    its run cache did not write it, and the selection it recorded stands in, saying so."""
    selection = read_json(config.path("compressed") / "selection.json")
    report = config.path("compression")
    written = read_json(report) if report.is_file() else {}
    if all(written.get(key) == value for key, value in selection.items()):
        return written
    why = "the compress stage did not run here (DVC restored it from its run cache), so its per-variant table is absent"
    return {**selection, "message": f"{selection['message']}; {why}"}


@stage_task("register")
def register(config: Config) -> StageResult:
    from prefect.runtime import flow_run

    metrics = read_json(config.path("metrics"))
    inputs = PromotionInputs(
        candidate=config.path("selected"),
        metrics=metrics,
        fairness=read_json(config.path("fairness")),
        validation=read_json(config.path("validation") / "report.json"),
        explain=read_json(config.path("explain") / "summary.json"),
        compression=compression_report(config),
        slices=pd.read_csv(config.path("evaluation") / "slices.csv"),
        **{split: read_parquet(config.path(split)) for split in ("train", "valid", "test", "holdout")},
    )
    promotion = register_candidate(config, inputs, str(flow_run.id or "none (run by DVC or the CLI)"))
    folder = config.path("runs") / f"v{promotion.registration.version}"
    registration = replace(
        promotion.registration, run_report=str((folder / "run_report.html").relative_to(config.root))
    )
    decision = registration.decision
    config.path("runs").mkdir(parents=True, exist_ok=True)  # a DVC output even when nothing new was registered
    if promotion.run_report is not None:  # None: an identical version exists, nothing new was registered
        with atomic_dir(folder) as staging:
            write_text(staging / "run_report.html", promotion.run_report)
            write_json(staging / "registration.json", registration.to_dict())
        if decision.promote:
            write_text(config.path("run_report"), promotion.run_report)
    write_json(config.path("registration"), registration.to_dict())
    write_json(config.path("headline"), promotion.headline, sort_keys=False)  # its order is the columns' order
    if promotion.run_report is not None:  # a new version was registered and decided
        announce(config, registration)
    markdown = decision_markdown(registration, config.root / registration.run_report)
    publish_markdown("alias-decision", markdown, "Promotion decision and gates")
    stage_logger().info(
        "registered %s v%s: %s\n%s", registration.model_name, registration.version, decision.outcome, decision.reason
    )
    return {"stage": "register", **registration.to_dict()}


def announce(config: Config, registration: Registration) -> None:
    """Promoted or rejected: the event the notification automations forward (a staged version's release speaks
    later, from the release flow)."""
    decision = registration.decision
    payload = {
        "version": registration.version,
        "champion_version": decision.champion_version,
        "reason": decision.reason,
    }
    if decision.promote:
        emit(config, PROMOTED_EVENT, {**payload, "previous_version": decision.previous_version, "by": "gates"})
    elif not decision.staged:
        emit(config, REJECTED_EVENT, payload)
