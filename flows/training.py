"""The training DAG: every stage in order, each a cached, retried Prefect task over files.

Run it with `python -m flows.training`, `optiflow train`, or from a Prefect deployment; `dvc repro` runs the
same stage functions.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from optiflow.config import load_config
from tasks.common import StageResult, publish_table, run_stage
from tasks.evaluate import evaluate
from tasks.explain import explain
from tasks.fairness import fairness
from tasks.ingest import ingest
from tasks.register import register
from tasks.split import split
from tasks.train import train
from tasks.tune import tune

# The order DVC runs them in too (see optiflow/stages.py and tests/unit/test_stages.py).
STAGE_TASKS = (ingest, split, tune, train, evaluate, fairness, explain, register)


@flow(
    name="training",
    description="Validate, split, tune, train, evaluate, check fairness, explain, and register a tabular classifier.",
)
def training(params_path: str = "params.yaml", overrides: dict[str, Any] | None = None) -> list[StageResult]:
    """`overrides` sets dotted params keys for this run only, e.g. {"split.test_size": 0.25}."""
    config = load_config(params_path, overrides)
    results = [run_stage(stage, config) for stage in STAGE_TASKS]
    publish_table(
        "training-stages",
        [{"stage": r["stage"], "state": r["state"]} for r in results],
        "Stages of this training run and whether each ran or came from the cache",
    )
    return results


if __name__ == "__main__":
    import sys

    from flows.cli import main

    raise SystemExit(main(["train", *sys.argv[1:]]))
