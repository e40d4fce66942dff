"""What the CLI prints for people: the run summary, the registry status, the profile `optiflow init` wrote.

Tables fill the terminal's width; piped into a file or another program the output is plain (no colour codes,
ASCII borders) and never cut to 80 columns.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from datetime import UTC
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optiflow.config import Config
from optiflow.release.registry import Rollback
from optiflow.release.report import gate_verdict

if TYPE_CHECKING:
    from optiflow.data.profile import Proposal
    from optiflow.release.rollout import ReleaseState

_METRICS = ("roc_auc", "pr_auc", "f1", "accuracy", "neg_log_loss", "neg_brier")
PIPED_WIDTH = 200  # columns when the output is not a terminal: wide enough that no table is cut


def console() -> Console:
    """A console as wide as the terminal; plain and wide when the output is piped."""
    terminal = sys.stdout.isatty()
    width = shutil.get_terminal_size((PIPED_WIDTH, 24)).columns if terminal else PIPED_WIDTH
    return Console(width=width, force_terminal=terminal, no_color=not terminal, highlight=False)


def table(title: str, console: Console) -> Table:
    """A table in the console's style: box drawing in a terminal, ASCII when piped."""
    return Table(title=title, box=box.HEAVY_HEAD if console.is_terminal else box.ASCII)


def print_training_summary(results: list[dict[str, Any]], out: Console | None = None) -> None:
    out = out or console()
    by_stage = {result["stage"]: result for result in results}
    states = {result["stage"]: "cached" if result["state"] == "Cached" else "ran" for result in results}
    ran = [stage for stage, state in states.items() if state == "ran"]
    cached = [stage for stage, state in states.items() if state == "cached"]
    out.print(
        f"Training run: {len(ran)} stage(s) ran"
        + (f" ({', '.join(ran)})" if ran and cached else "")
        + (f", {len(cached)} cached" + (f" ({', '.join(cached)})" if ran else "") if cached else "")
    )
    evaluated = by_stage["evaluate"]
    metrics = table(f"Test metrics of the selected model: {evaluated['selected']}", out)
    for name in _METRICS:
        metrics.add_column(name, justify="right")
    metrics.add_row(*(f"{evaluated['test'][name]:.4f}" for name in _METRICS))
    out.print(metrics)

    fair = by_stage["fairness"]
    failed = len(fair["failures"])
    out.print(
        "Fairness: "
        + ("all gates passed" if fair["passed"] else f"{failed} gate(s) failed or not evaluated (see the gates below)")
    )
    if fair["mitigated"]:
        out.print("  (a mitigated candidate was evaluated and reported, not registered)")

    registered = by_stage["register"]
    decision = registered["decision"]
    if not registered["run_report"]:  # an identical version was registered before: nothing new
        out.print(f"Model {registered['model_name']}: {decision['reason']}", markup=False)
        return
    gates = table(f"Promotion gates of version {registered['version']}", out)
    for column in ("gate", "metric", "observed", "threshold", "passed"):
        gates.add_column(column, justify="right" if column in ("observed", "threshold") else "left")
    for result in decision["gates"]["results"]:
        verdict = gate_verdict(result)
        gates.add_row(
            result["gate"],
            escape(result["metric"]),
            "n/a" if result["observed"] is None else f"{result['observed']:.4g}",
            "-" if result["threshold"] is None else f"{result['comparison']} {result['threshold']:.4g}",
            verdict if result["passed"] else f"[bold red]{verdict}[/]",
        )
    out.print(gates)
    if decision["promote"]:
        moved = f"; v{decision['previous_version']} is now previous" if decision["previous_version"] else ""
        verdict = f"[bold green]promoted[/] to alias [bold]{registered['alias']}[/]{moved}"
    else:
        holder = f"v{decision['champion_version']}" if decision["champion_version"] else "no version"
        verdict = f"[bold red]rejected[/]; alias [bold]{registered['alias']}[/] stays on {holder}"
    out.print(f"Model [bold]{registered['model_name']}[/] version [bold]{registered['version']}[/] {verdict}")
    if not decision["promote"]:
        out.print(decision["reason"], markup=False)
    kept = "" if decision["promote"] else "; reports/run_report.html still shows the champion's run"
    out.print(f"Run report: {registered['run_report']}{kept}", markup=False)
    uri = registered["tracking_uri"]
    remote = uri.startswith(("http://", "https://"))
    browse = "open it in a browser" if remote else f"mlflow ui --backend-store-uri {uri}"
    out.print(f"Tracking: {uri}  (browse: {browse})", markup=False)


def print_rollback(rollback: Rollback, model_name: str, alias: str, out: Console | None = None) -> None:
    out = out or console()
    source = f"v{rollback.rolled_back}" if rollback.rolled_back else "no version"
    out.print(
        f"{model_name}: alias [bold]{alias}[/] moved from {source} back to [bold]v{rollback.restored}[/] "
        f"by {rollback.user} at {rollback.at} (reason: {rollback.reason}); the previous alias is removed."
    )


def print_registry_status(config: Config, out: Console | None = None) -> None:
    from mlflow import MlflowClient

    from optiflow.release.registry import connect

    out = out or console()
    uri = connect(config, create=False)
    client = MlflowClient()
    name = config.params.registry.model_name
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True)
    listing = table(f"{name} @ {uri}", out)
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
        listing.add_column(column)
    # search_model_versions leaves `aliases` empty: read them from the registered model
    aliases: dict[str, list[str]] = {}
    if versions:
        for alias, number in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(number), []).append(alias)
    for version in versions:
        run_metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        listing.add_row(
            str(version.version),
            ", ".join(sorted(aliases.get(str(version.version), []))) or "-",
            version.tags.get("model.family", "-"),
            version.tags.get("optiflow.promotion", "-"),
            *(
                f"{run_metrics[key]:.4f}" if key in run_metrics else "-"
                for key in ("test/roc_auc", "test/pr_auc", "test/f1")
            ),
            _timestamp(version.creation_timestamp),
            version.tags.get("git.commit", "-")[:10],
        )
    out.print(listing if versions else f"No versions of {name} registered yet at {uri}: run `make run`.")


def _timestamp(millis: int) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(millis / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def print_monitoring_summary(rows: list[dict[str, Any]], out: Console | None = None) -> None:
    """One line per batch checked in this run: figures and the decision with its reason."""
    out = out or console()
    if not rows:
        out.print("No new batches to check.")
        return
    batches = table("Monitoring run", out)
    for column in ("batch", "rows", "drift share", "prediction drift", "ROC AUC", "decision", "reason"):
        batches.add_column(column, justify="right" if column in ("rows", "drift share") else "left")

    def number(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    for row in rows:
        batches.add_row(
            escape(str(row["batch_id"])),
            str(row["rows"]),
            number(row["drift_share"]),
            number(row["prediction_drift"]),
            number(row["roc_auc"]),
            row["decision"],
            escape(row["reason"]),
        )
    out.print(batches)


def print_scoring_summary(summary: dict[str, Any], out: Console | None = None) -> None:
    out = out or console()
    counts = table(f"Batch scoring with {summary['model_name']} v{summary['model_version']}", out)
    counts.add_column("measure")
    counts.add_column("value", justify="right")
    for key in ("rows_read", "rows_scored", "rows_rejected", "cache_hits", "cache_misses", "chunks", "seconds"):
        counts.add_row(key.replace("_", " "), str(summary[key]))
    out.print(counts)
    out.print(f"predictions: {escape(summary['output'])}\nrejects:     {escape(summary['rejects'])}")


def nothing_scored(summary: dict[str, Any], reasons: int = 3) -> str | None:
    """Why a scoring run that scored no row failed (the commonest reject reasons), or None when rows were scored."""
    if summary["rows_scored"]:
        return None
    if not summary["rows_read"]:
        return f"{summary['output']}: nothing was scored: the input holds no rows"
    import pandas as pd

    rejected = pd.read_csv(summary["rejects"], dtype=str)["reason"].fillna("")
    common = Counter(part for reason in rejected for part in reason.split("; ") if part).most_common(reasons)
    listed = ", ".join(f"{reason!r} ({count} rows)" for reason, count in common)
    return (
        f"nothing was scored: all {summary['rows_read']} rows were rejected; most common reasons: {listed} "
        f"(every row and its reasons: {summary['rejects']})"
    )


def print_init_summary(proposal: Proposal, params: str, out: Console | None = None) -> None:
    """The profile as a table, what was written, and what a person should look at next."""
    out = out or console()
    profile = proposal.profile
    flagged = {leak.split(":", 1)[0]: "gives the label away alone: training will stop" for leak in proposal.leaks}
    for column in proposal.data.sensitive_features:
        flagged.setdefault(column, "sensitive (declared)")
    for column in profile.sensitive_candidates():
        flagged.setdefault(column, "name suggests a sensitive attribute: declare it?")
    from optiflow.data.profile import describe

    columns = table(f"{profile.source.name}: {profile.rows} rows", out)
    for name in ("column", "kind", "missing", "values", "range", "note"):
        columns.add_column(name, justify="right" if name in ("missing", "values") else "left")
    for row in describe(profile, flagged):
        columns.add_row(*(escape(str(value)) for value in row.values()))
    out.print(columns)
    out.print(
        f"Target {profile.target!r}: positive label {profile.positive_label!r} ({profile.positive_share:.1%} of rows; "
        f"{profile.label_note}), negative {profile.negative_label!r}.",
        markup=False,
    )
    out.print(f"Wrote {params}: data, validation rules, slices, robustness bounds, drift tests and scenarios.")
    data = proposal.data
    if not data.sensitive_features:
        candidates = profile.sensitive_candidates()
        out.print(
            "No sensitive features declared: fairness is not evaluated and blocks a release until you list them in "
            "data.sensitive_features"
            + (f" (columns whose names suggest one: {', '.join(candidates)})" if candidates else "")
            + " or allow it with gates.allow_not_evaluated: [fairness].",
            markup=False,
        )
    for leak in proposal.leaks:
        out.print(f"Leakage: {leak}. Drop the column or list it in validate.allow_leakage.", markup=False)
    out.print(f"Review {params}, then run `make run` (or `optiflow train --params {params}`).", markup=False)


def print_release_status(config: Config, state: ReleaseState | None, out: Console | None = None) -> None:
    """The running release on the logged traffic (written to reports/release too), or that none runs."""
    from tasks.release import review_release

    out = out or console()
    if state is None:
        out.print(f"{config.params.registry.model_name}: no release is running")
        return
    review = review_release.fn(config, state)
    out.print(escape(review["markdown"]))
    out.print(f"page: {config.path('release') / 'status.html'}")
