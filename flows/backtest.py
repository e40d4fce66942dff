"""The backtest flow (`optiflow backtest`, settings in the `backtest` group): a long stream from the default data
replayed through the monitoring and training core under every retraining policy and scenario; the table, the
timeline and an HTML page with one ROC-AUC-over-time chart per scenario land in reports/backtest/, in MLflow and as
Prefect artifacts."""

from __future__ import annotations

from typing import Any

from prefect import flow

from optiflow.preflight import load_settings
from tasks.backtest import backtest_policies


@flow(name="backtest", description="Compare retraining policies on a replayed stream with shifts and late labels.")
def backtest(
    params_path: str = "params.yaml",
    batches: int | None = None,
    batch_rows: int | None = None,
    label_delay: int | None = None,
    shift_at: int | None = None,
    every_k: int | None = None,
    scenarios: list[str] | None = None,
    policies: list[str] | None = None,
) -> dict[str, Any]:
    """Each parameter overrides its `backtest.*` setting for this run (default: the settings)."""
    given = {
        "batches": batches,
        "batch_rows": batch_rows,
        "label_delay": label_delay,
        "shift_at": shift_at,
        "every_k": every_k,
        "scenarios": scenarios,
        "policies": policies,
    }
    config = load_settings(params_path, {f"backtest.{key}": value for key, value in given.items() if value is not None})
    return backtest_policies(config, config.params.backtest)
