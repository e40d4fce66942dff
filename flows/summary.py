"""What the CLI prints for people: the run summary table and the registry status."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from rich.console import Console
from rich.table import Table

from optiflow.config import Config

_METRICS = ("roc_auc", "pr_auc", "f1", "accuracy", "neg_log_loss", "neg_brier")


def print_training_summary(results: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or Console()
    by_stage = {result["stage"]: result for result in results}
    stages = Table(title="Training run")
    stages.add_column("stage")
    stages.add_column("state")
    for result in results:
        stages.add_row(result["stage"], "cached" if result["state"] == "Cached" else "ran")
    console.print(stages)

    evaluated = by_stage["evaluate"]
    metrics = Table(title=f"Test metrics of the selected model: {evaluated['selected']}")
    for name in _METRICS:
        metrics.add_column(name, justify="right")
    metrics.add_row(*(f"{evaluated['test'][name]:.4f}" for name in _METRICS))
    console.print(metrics)

    registered = by_stage["register"]
    decision = registered["decision"]
    verdict = "promoted to" if decision["promote"] else "not promoted to"
    console.print(
        f"Model [bold]{registered['model_name']}[/] version [bold]{registered['version']}[/] {verdict} "
        f"alias [bold]{registered['alias']}[/]: {decision['reason']}"
    )
    console.print(
        f"Tracking: {registered['tracking_uri']}  (browse: mlflow ui --backend-store-uri {registered['tracking_uri']})"
    )


def print_registry_status(config: Config, console: Console | None = None) -> None:
    from mlflow import MlflowClient

    from optiflow.registry import connect

    console = console or Console()
    uri = connect(config)
    client = MlflowClient()
    name = config.params.registry.model_name
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True)
    table = Table(title=f"{name} @ {uri}")
    for column in ("version", "aliases", "family", "test roc_auc", "test pr_auc", "test f1", "created", "git commit"):
        table.add_column(column)
    for version in versions:
        run_metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        table.add_row(
            version.version,
            ", ".join(version.aliases) or "-",
            version.tags.get("model.family", "-"),
            *(
                f"{run_metrics[key]:.4f}" if key in run_metrics else "-"
                for key in ("test_roc_auc", "test_pr_auc", "test_f1")
            ),
            _timestamp(version.creation_timestamp),
            version.tags.get("git.commit", "-")[:10],
        )
    console.print(table if versions else f"No versions of {name} registered yet at {uri}.")


def _timestamp(millis: int) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(millis / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
