"""Two training runs and a monitoring run that retrains, started at the same time on one project as real processes
reporting to one Prefect API (as where a server is configured; a port race between temporary servers is
tests/integration/test_ephemeral_server.py's): no run is lost, the tracking database stays intact, every version is
registered, promotion is serialised (the promoted versions form one chain from the old champion, `previous` is the
champion just before the current one), and every output on disk is complete."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from optiflow.config import load_config
from optiflow.io import read_parquet
from optiflow.release.registry import connect
from tests.conftest import CLASSICAL_FAMILIES, registry_state
from tests.integration.corpus.cases import params_with
from tests.integration.test_faults import REPO, _cli, _database_intact, _leftover_temporaries, _outputs_complete

LIMIT_S = 900  # all three processes together; each takes about a minute alone on a 1,500-row sample
# One training run retrains on the champion's split, where it ties (non-inferiority alone promotes a tie, so
# `previous` moves too); the other uses another seed and another valid share, so another split (roles follow the
# row keys, not the seed): the runs write different outputs to the same folders.
# The runs that train do so without the MLP: this test is about shared files and the registry, not the families.
TRAININGS = {
    "tie": ("-S", "gates.champion.superiority=false"),
    "seed-11": (
        "-S", "seed=11", "-S", "split.valid_size=0.2", "-S", "tune.n_trials=2",
        "-S", f"train.families={CLASSICAL_FAMILIES}",
    ),
}  # fmt: skip
BATCH = "002-price_increase"  # a drifted, labelled batch: the monitoring run retrains on it


def _start(logs: Path, name: str, *args: str) -> subprocess.Popen:
    """A CLI process writing to a log file (a pipe nobody reads while another process is awaited would stall it)."""
    with open(logs / f"{name}.log", "w") as log:
        return subprocess.Popen(
            _cli(*args), cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT
        )


def _finish(processes: dict[str, subprocess.Popen]) -> dict[str, int]:
    """Every process's exit code within LIMIT_S; past it the rest are killed and the test fails."""
    deadline = time.monotonic() + LIMIT_S
    try:
        return {name: p.wait(timeout=max(1.0, deadline - time.monotonic())) for name, p in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _promotion_chain(params: Path, old: list[int]) -> dict[str, tuple[str | None, str | None]]:
    """Each new version's promotion tag and the champion it was compared with (its model card says which)."""
    from mlflow import MlflowClient

    config = load_config(params)
    connect(config)
    name, client = config.params.registry.model_name, MlflowClient()
    versions = {}
    for found in client.search_model_versions(f"name='{name}'"):
        if int(found.version) in old:
            continue
        compared = re.search(r"compared with champion (?:v(\d+)|none)", found.description or "")
        assert compared, f"v{found.version}: the model card does not name the champion it was compared with"
        versions[str(found.version)] = (found.tags.get("optiflow.promotion"), compared.group(1))
    return versions


def _runs(params: Path) -> dict[str, dict[str, str]]:
    """Every MLflow run of the experiment by id: its name, tags and params (``param.`` prefixed)."""
    from mlflow import MlflowClient

    config = load_config(params)
    connect(config)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(config.params.tracking.experiment)
    return {
        run.info.run_id: {
            "name": run.info.run_name,
            **run.data.tags,
            **{f"param.{key}": value for key, value in run.data.params.items()},
        }
        for run in client.search_runs([experiment.experiment_id], max_results=1000)
    }


@pytest.mark.slow
@pytest.mark.usefixtures("flows_in_processes_reuse_the_session_api")
def test_two_trainings_and_a_retraining_monitor_at_once_lose_nothing(
    trained_copy: Path, churn_sample: pd.DataFrame
) -> None:
    root = trained_copy.parent
    # the trained project's pool holds about 150 rows (split.pool_size 0.10 of 1,500): a batch fits in it
    watched = params_with(
        root,
        "monitor",
        **{
            "simulate.batch_rows": 120,
            "monitor.min_new_rows": 100,
            "monitor.trigger": "drift",
            "train.families": CLASSICAL_FAMILIES,
        },
    )
    assert main(["simulate-drift", "--params", str(watched)]) == 0
    registry, before = registry_state(trained_copy), _runs(trained_copy)
    logs = root.parent / "logs"
    logs.mkdir()

    processes = {
        **{
            f"train-{name}": _start(logs, f"train-{name}", "train", "--params", str(trained_copy), *overrides)
            for name, overrides in TRAININGS.items()
        },
        "monitor": _start(logs, "monitor", "monitor", "--params", str(watched), "--batches",
                          f"data/batches/{BATCH}.parquet", "--retrain", "direct"),
    }  # fmt: skip
    codes = _finish(processes)
    failed = {name: (logs / f"{name}.log").read_text()[-4000:] for name, code in codes.items() if code != 0}
    assert not failed, f"exit codes {codes}; logs in {logs}:\n" + "\n\n".join(f"{n}:\n{t}" for n, t in failed.items())

    assert _database_intact(root)
    new = [run for run_id, run in _runs(trained_copy).items() if run_id not in before]
    training = [run for run in new if run["name"].startswith("training-")]
    assert sorted(int(run["param.seed"]) for run in training if run["data.source"] == "data/input.csv") == [11, 42]
    assert [run["data.source"] for run in training if run["data.source"] != "data/input.csv"] == [
        f"data/retraining/{BATCH}.parquet"
    ], training
    assert [run["name"] for run in new if run["name"].startswith("monitoring-")] == [f"monitoring-{BATCH}"]
    # Each run registered its own data and model: the row count of its own input, and the seed-11 run its own split
    # (runs sharing the output folders without a lock registered one run's split and model three times). The
    # retraining's train split is the champion's: its only batch is the newest, which evaluates and never trains.
    by_seed = {int(run["param.seed"]): run for run in training if run["data.source"] == "data/input.csv"}
    assert by_seed[11]["data.train.md5"] != by_seed[42]["data.train.md5"], training
    window = len(read_parquet(root / f"data/retraining/{BATCH}.parquet"))
    assert sorted(int(run["data.rows"]) for run in training) == sorted([*[len(churn_sample)] * 2, window]), training

    after = registry_state(trained_copy)
    old, champion = registry["versions"], registry["aliases"]["champion"]
    assert after["versions"] == [*old, *range(max(old) + 1, max(old) + 4)], after  # consecutive, none lost
    chain = _promotion_chain(trained_copy, old)
    assert {tag for tag, _ in chain.values()} <= {"promoted", "rejected"}, chain
    # Serialised promotion: each promoted version compared with the champion of its moment, so the promoted versions
    # form one chain from the old champion; two promotions compared with the same champion would be a stale read.
    promoted = {compared: version for version, (tag, compared) in chain.items() if tag == "promoted"}
    assert len(promoted) == sum(tag == "promoted" for tag, _ in chain.values()), f"stale comparison: {chain}"
    order = [champion]
    while order[-1] in promoted:
        order.append(promoted.pop(order[-1]))
    assert not promoted, f"promoted versions off the chain from v{champion}: {chain}"
    assert after["aliases"]["champion"] == order[-1], (after, chain)
    expected_previous = order[-2] if len(order) > 1 else registry["aliases"].get("previous")
    assert after["aliases"].get("previous") == expected_previous, (after, chain)
    assert all(compared in order for _, compared in chain.values()), f"compared with a version never champion: {chain}"

    _outputs_complete(trained_copy)
    assert _leftover_temporaries(root) == []
