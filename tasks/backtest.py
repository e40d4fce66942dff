"""backtest: replay the stream through every policy (optiflow.monitoring.backtest), write the table, the timeline
and the HTML page atomically, log them to MLflow and publish the table as a Prefect artifact, with a progress bar."""

from __future__ import annotations

from typing import Any

from prefect import task

from optiflow.config import BacktestParams, Config
from optiflow.io import atomic_dir, write_text
from optiflow.monitoring.backtest import backtest_html, run_backtest
from tasks.common import in_prefect_run, publish_markdown, stage_logger


@task(name="backtest")
def backtest_policies(config: Config, settings: BacktestParams) -> dict[str, Any]:
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    log = stage_logger()
    progress_id = create_progress_artifact(0.0, key="backtest-progress") if in_prefect_run() else None

    def progress(done: int, total: int) -> None:
        log.info("backtest: %d of %d scenario x policy runs done", done, total)
        if progress_id is not None:
            update_progress_artifact(progress_id, 100.0 * done / total)

    table, timeline = run_backtest(config, settings, progress)
    target = config.root / "reports" / "backtest"
    with atomic_dir(target) as staging:
        table.to_csv(staging / "table.csv", index=False)
        timeline.to_csv(staging / "timeline.csv", index=False)
        write_text(staging / "backtest.html", backtest_html(table, timeline, settings))
    _log_mlflow(config, target, table)
    markdown = "# Backtest of retraining policies\n\n" + table.to_markdown(index=False, floatfmt=".3f")
    publish_markdown("backtest", markdown, f"backtest: {len(table)} scenario x policy runs; {target}/backtest.html")
    return {"folder": str(target), "table": table.to_dict(orient="records")}


def _log_mlflow(config: Config, folder: Any, table: Any) -> None:
    import mlflow

    from optiflow.release.registry import connect

    connect(config)
    with mlflow.start_run(run_name="backtest"):
        mlflow.set_tag("optiflow.kind", "backtest")
        for row in table.to_dict(orient="records"):
            prefix = f"{row['scenario']}.{row['policy']}"
            for key in ("mean_roc_auc", "worst_roc_auc", "retrains", "training_seconds", "false_alarms"):
                mlflow.log_metric(f"{prefix}.{key}", float(row[key]))
        mlflow.log_artifacts(str(folder), artifact_path="backtest")
