"""The batch scoring flow: score a CSV or Parquet file with the champion (or a given alias or version).

Run it with `optiflow predict --input X --output Y` or from a Prefect deployment with the same parameters.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from optiflow.preflight import load_settings
from tasks.score import score_file_task


@flow(name="scoring", description="Batch-score a file with a verified registered model; bad rows go to rejects.")
def scoring(
    input_path: str,
    output_path: str,
    params_path: str = "params.yaml",
    alias: str | None = None,
    version: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
) -> dict:
    """`overrides` sets dotted params keys for this run only, e.g. {"score.chunk_rows": 10000}; with
    {"orchestration.task_runner": "dask"} the chunks are scored on Dask workers (`optiflow predict --task-runner`).
    `force` lets the output replace the input or a file the project keeps (`optiflow predict --force`)."""
    config = load_settings(params_path, overrides)
    return score_file_task(config, input_path, output_path, alias, version, force)
