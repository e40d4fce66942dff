"""The backtest flow (`optiflow backtest`): a long stream from the default data replayed through the monitoring and
training core under every retraining policy and scenario; the table, the timeline and an HTML page with one
ROC-AUC-over-time chart per scenario land in reports/backtest/, in MLflow and as Prefect artifacts."""

from __future__ import annotations

from typing import Any

from prefect import flow

from optiflow.monitoring.backtest import POLICIES, SCENARIOS, BacktestSettings
from optiflow.preflight import load_settings
from tasks.backtest import backtest_policies


@flow(name="backtest", description="Compare retraining policies on a replayed stream with shifts and late labels.")
def backtest(
    params_path: str = "params.yaml",
    batches: int = 60,
    batch_rows: int = 1000,
    label_delay: int = 3,
    shift_at: int = 20,
    every_k: int = 10,
    scenarios: list[str] | None = None,
    policies: list[str] | None = None,
) -> dict[str, Any]:
    """`label_delay`: batches until a batch's labels arrive; `shift_at`: the first changed batch of each scenario."""
    config = load_settings(params_path, {})
    settings = BacktestSettings(
        batches=batches,
        batch_rows=batch_rows,
        label_delay=label_delay,
        shift_at=shift_at,
        every_k=every_k,
        scenarios=tuple(scenarios or SCENARIOS),
        policies=tuple(policies or POLICIES),
    )
    return backtest_policies(config, settings)
