"""The tune stage's decisions on tiny inputs: where its studies are stored, which families are tuned, its files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optiflow.config import OrchestrationParams, ParamSpec, TuneParams
from optiflow.data.schema import Schema
from optiflow.errors import ConfigError
from optiflow.io import SQLITE
from optiflow.modeling.studies import (
    TuningRows,
    check_storage,
    shared_storage,
    study_settings,
    tune_families,
    tuning_summary,
    write_study_outputs,
)
from optiflow.modeling.tuning import JOURNAL, TuningResult

THREADS = OrchestrationParams()
THREE_THREADS = OrchestrationParams(tune_workers=3)
REMOTE = OrchestrationParams(task_runner="dask", dask_address="tcp://scheduler:8786", dask_workers=4)


def test_one_worker_keeps_the_configured_storage_or_memory() -> None:
    with shared_storage(None, THREADS) as storage:
        assert storage is None
    with shared_storage("postgresql://db/optuna", REMOTE) as storage:
        assert storage == "postgresql://db/optuna"


def test_several_local_workers_without_storage_share_a_throwaway_journal_file() -> None:
    with shared_storage(None, THREE_THREADS) as storage:
        journal = Path(storage.removeprefix(JOURNAL))
        assert storage.startswith(JOURNAL) and journal.name == "optuna.journal" and journal.parent.is_dir()
    assert not journal.parent.exists()  # gone with the run


def test_a_remote_dask_cluster_needs_a_storage_every_worker_reaches() -> None:
    needs = r"tcp://scheduler:8786 with 4 tuning workers needs a tune\.storage"
    with pytest.raises(ConfigError, match=needs), shared_storage(None, REMOTE):
        pytest.fail("no storage to share")


def test_a_study_database_inside_the_tuning_folder_is_refused(tmp_path: Path) -> None:
    tuning = tmp_path / "models" / "tuning"
    with pytest.raises(ConfigError, match=r"lies inside paths\.tuning"):
        check_storage(f"{SQLITE}{tuning}/studies/optuna.db", tuning)
    check_storage(f"{SQLITE}{tmp_path}/state/optuna.db", tuning)
    assert (tmp_path / "state").is_dir() and not tuning.exists()  # the parent is made, the database is not
    check_storage("postgresql://db/optuna", tuning)
    check_storage(None, tuning)


def test_study_settings_resolve_a_relative_database_against_the_project(tmp_path: Path) -> None:
    tune = TuneParams(storage="sqlite:///state/optuna.db", n_trials=7)
    with study_settings(tune, tmp_path, tmp_path / "models/tuning", THREE_THREADS) as settings:
        assert settings.storage == f"{SQLITE}{(tmp_path / 'state/optuna.db').resolve()}" and settings.n_trials == 7
    inside = TuneParams(storage="sqlite:///models/tuning/optuna.db")
    refused = pytest.raises(ConfigError, match=r"lies inside paths\.tuning")
    with refused, study_settings(inside, tmp_path, tmp_path / "models/tuning", THREADS):
        pytest.fail("refused before any study runs")


def _result(family: str, trials: int = 3) -> TuningResult:
    rows = tuple(
        {"number": n, "state": "COMPLETE", "value": 0.7 + n / 100, "params": {"C": 10.0**-n}, "fold_scores": [0.7]}
        for n in range(trials)
    )
    return TuningResult(
        family=family,
        study_name=f"optiflow-{family}-tpe-0",
        sampler="tpe",
        pruner="median",
        cv_folds=2,
        best_params={"C": 0.01},
        best_score=0.7234567,
        n_trials=trials,
        n_complete=trials,
        n_pruned=0,
        n_failed=0,
        folds_computed=2 * trials,
        folds_possible=2 * trials,
        trials=rows,
        importances={},
        importance_note="importances need at least 2 varying hyperparameters",
    )


def test_only_families_with_a_search_space_are_tuned_each_through_the_runner() -> None:
    space = {"C": ParamSpec(type="float", low=0.01, high=1.0)}
    settings = TuneParams(spaces={"logistic_regression": space, "svm": space})
    rows = TuningRows(pd.DataFrame({"x": [1.0]}), np.array([1]), Schema(numeric=("x",), categorical=()))
    seen = []

    def run_study(family, given_space, study):
        seen.append((family, given_space))
        return _result(family)

    families = {"logistic_regression": {"max_iter": 100}, "hist_gradient_boosting": None}
    results = tune_families(rows, families, settings, seed=1, run_study=run_study)
    assert seen == [("logistic_regression", space)]  # svm is not trained, so not tuned
    assert results["hist_gradient_boosting"].startswith("not tuned (no tune.spaces entry")
    assert tuning_summary(results) == {
        "logistic_regression": {"best_score": 0.723457, "best_params": {"C": 0.01}, "trials": 3, "pruned": 0},
        "hist_gradient_boosting": results["hist_gradient_boosting"],
    }


def test_study_outputs_are_the_summary_train_reads_the_trials_and_the_plots(tmp_path: Path) -> None:
    written = write_study_outputs(tmp_path, _result("logistic_regression"))
    assert [path.name for path in written] == [
        "logistic_regression.json",
        "logistic_regression-trials.csv",
        "logistic_regression-history.png",
        "logistic_regression-importance.png",
    ]
    assert json.loads(written[0].read_text())["best_params"] == {"C": 0.01}
    trials = pd.read_csv(written[1])
    assert list(trials["trial"]) == [0, 1, 2] and list(trials["best_so_far"]) == [0.70, 0.71, 0.72]
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in written[2:])
