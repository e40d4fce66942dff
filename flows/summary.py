"""What the CLI prints for people: the run summary table and the registry status."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optiflow.config import Config
from optiflow.release.registry import Rollback

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

    fair = by_stage["fairness"]
    console.print(
        "Fairness: "
        + ("all gates passed" if fair["passed"] else "; ".join(fair["failures"]))
        + (" (mitigated candidate evaluated and reported, not registered)" if fair["mitigated"] else "")
    )

    registered = by_stage["register"]
    decision = registered["decision"]
    gates = Table(title=f"Promotion gates of version {registered['version']}")
    for column in ("gate", "metric", "observed", "threshold", "passed"):
        gates.add_column(column, justify="right" if column in ("observed", "threshold") else "left")
    for result in decision["gates"]["results"]:
        gates.add_row(
            result["gate"],
            escape(result["metric"]),
            "n/a" if result["observed"] is None else f"{result['observed']:.4g}",
            "-" if result["threshold"] is None else f"{result['comparison']} {result['threshold']:.4g}",
            "yes" if result["passed"] else "[bold red]NO[/]",
        )
    console.print(gates)
    if decision["promote"]:
        moved = f"; v{decision['previous_version']} is now previous" if decision["previous_version"] else ""
        verdict = f"[bold green]promoted[/] to alias [bold]{registered['alias']}[/]{moved}"
    else:
        holder = f"v{decision['champion_version']}" if decision["champion_version"] else "no version"
        verdict = f"[bold red]rejected[/]; alias [bold]{registered['alias']}[/] stays on {holder}"
    console.print(f"Model [bold]{registered['model_name']}[/] version [bold]{registered['version']}[/] {verdict}")
    if not decision["promote"]:
        console.print(decision["reason"], markup=False)
    console.print(f"Run report: {registered['run_report']}")
    uri = registered["tracking_uri"]
    remote = uri.startswith(("http://", "https://"))
    browse = "open it in a browser" if remote else f"mlflow ui --backend-store-uri {uri}"
    console.print(f"Tracking: {uri}  (browse: {browse})")


def print_rollback(rollback: Rollback, model_name: str, alias: str, console: Console | None = None) -> None:
    console = console or Console()
    source = f"v{rollback.rolled_back}" if rollback.rolled_back else "no version"
    console.print(
        f"{model_name}: alias [bold]{alias}[/] moved from {source} back to [bold]v{rollback.restored}[/] "
        f"by {rollback.user} at {rollback.at} (reason: {rollback.reason}); the previous alias is removed."
    )


def print_registry_status(config: Config, console: Console | None = None) -> None:
    from mlflow import MlflowClient

    from optiflow.release.registry import connect

    console = console or Console()
    uri = connect(config, create=False)
    client = MlflowClient()
    name = config.params.registry.model_name
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True)
    table = Table(title=f"{name} @ {uri}")
    columns = (
        "version",
        "aliases",
        "family",
        "outcome",
        "test roc_auc",
        "test pr_auc",
        "test f1",
        "created",
        "git commit",
    )
    for column in columns:
        table.add_column(column)
    # search_model_versions leaves `aliases` empty: read them from the registered model
    aliases: dict[str, list[str]] = {}
    if versions:
        for alias, number in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(number), []).append(alias)
    for version in versions:
        run_metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        table.add_row(
            str(version.version),
            ", ".join(sorted(aliases.get(str(version.version), []))) or "-",
            version.tags.get("model.family", "-"),
            version.tags.get("optiflow.promotion", "-"),
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


def print_monitoring_summary(rows: list[dict[str, Any]], console: Console | None = None) -> None:
    """One line per batch checked in this run: figures and the decision with its reason."""
    console = console or Console()
    if not rows:
        console.print("No new batches to check.")
        return
    table = Table(title="Monitoring run")
    for column in ("batch", "rows", "drift share", "prediction drift", "ROC AUC", "decision", "reason"):
        table.add_column(column, justify="right" if column in ("rows", "drift share") else "left")

    def number(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    for row in rows:
        table.add_row(
            escape(str(row["batch_id"])),
            str(row["rows"]),
            number(row["drift_share"]),
            number(row["prediction_drift"]),
            number(row["roc_auc"]),
            row["decision"],
            escape(row["reason"]),
        )
    console.print(table)


def print_scoring_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"Batch scoring with {summary['model_name']} v{summary['model_version']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("rows_read", "rows_scored", "rows_rejected", "cache_hits", "cache_misses", "chunks", "seconds"):
        table.add_row(key.replace("_", " "), str(summary[key]))
    console.print(table)
    console.print(f"predictions: {escape(summary['output'])}\nrejects:     {escape(summary['rejects'])}")
