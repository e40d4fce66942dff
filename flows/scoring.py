"""The batch scoring flow: score a CSV or Parquet file with the champion (or a given alias or version).

Run it with `optiflow predict --input X --output Y` or from a Prefect deployment with the same parameters; the
scheduled deployment passes no input and scores each new batch of paths.batches into paths.scored.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from optiflow.errors import ConfigError
from optiflow.preflight import load_settings
from optiflow.serving.batch import unscored_batches
from tasks.score import report_nothing_to_score, score_file_task


@flow(name="scoring", description="Batch-score a file with a verified registered model; bad rows go to rejects.")
def scoring(
    input_path: str | None = None,
    output_path: str | None = None,
    params_path: str = "params.yaml",
    alias: str | None = None,
    version: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
) -> list[dict]:
    """One summary per file scored. Without `input_path` and `output_path` it scores every batch of paths.batches
    not scored yet into paths.scored/<batch id>.csv; with none new it completes with a "no new batches" artifact.

    `overrides` sets dotted params keys for this run only, e.g. {"score.chunk_rows": 10000}; with
    {"orchestration.task_runner": "dask"} the chunks are scored on Dask workers (`optiflow predict --task-runner`).
    `force` lets the output replace the input or a file the project keeps (`optiflow predict --force`)."""
    config = load_settings(params_path, overrides)
    if input_path is None and output_path is None:
        pending = unscored_batches(config)
        if not pending:
            report_nothing_to_score(config)
        # paths.scored is the flow's own folder (a pipeline path, refused unless forced); no file there is replaced
        return [score_file_task(config, str(source), str(target), alias, version, True) for source, target in pending]
    if input_path is None or output_path is None:
        raise ConfigError("scoring: give both input_path and output_path, or neither to score the new batches")
    return [score_file_task(config, input_path, output_path, alias, version, force)]
