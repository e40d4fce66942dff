"""Tuning core on a tiny inline table: space validation, each sampler, pruning, resuming, parallel trials, outputs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from pydantic import ValidationError

from optiflow.config import ParamSpec, TuneParams, parse_params
from optiflow.data.schema import Schema
from optiflow.errors import ConfigError
from optiflow.modeling.families import check_settings
from optiflow.modeling.tuning import (
    LATENCY,
    TuningError,
    grid_values,
    history_figure,
    importance_figure,
    trial_table,
    tune_family,
    tuned_hyperparameters,
)
from tests.conftest import shipped_params

LR = "logistic_regression"
SCHEMA = Schema(numeric=("a", "b", "c"), categorical=("colour",))


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    """200 rows: the label follows `a` and the colour red, with noise; b and c are noise."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    colour = rng.choice(["red", "green", "blue"], size=200)
    y = ((x[:, 0] + 0.7 * (colour == "red") + rng.normal(scale=0.8, size=200)) > 0).astype(np.int64)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "colour": colour}), y


def settings(space: dict[str, Any], family: str = LR, **overrides: Any) -> TuneParams:
    return TuneParams(**{"n_trials": 4, "cv_folds": 3, "spaces": {family: space}, **overrides})


C_SPACE = {
    "C": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
    "fit_intercept": {"type": "categorical", "choices": [True, False]},
}


def run(data, tune: TuneParams, family: str = LR, **kwargs: Any):
    frame, y = data
    return tune_family(family, tune.spaces[family], frame, y, SCHEMA, tune, 7, progress_bar=False, **kwargs)


# --- search spaces ---------------------------------------------------------------------------------------------


def test_space_parses_types_bounds_log_and_choices() -> None:
    tune = TuneParams(
        sampler="grid",
        spaces={
            LR: {
                "C": {"type": "float", "low": 0.01, "high": 100, "log": True},
                "l1_ratio": {"type": "categorical", "choices": [0.0, 0.5, 1.0]},
            },
            "hist_gradient_boosting": {
                "max_leaf_nodes": {"type": "int", "low": 4, "high": 64},
                "max_depth": {"type": "categorical", "choices": [None, 3, 6]},
            },
        },
    )
    c = tune.spaces[LR]["C"]
    assert (c.type, c.low, c.high, c.log) == ("float", 0.01, 100, True)
    assert tune.spaces[LR]["l1_ratio"].choices == (0.0, 0.5, 1.0)
    assert tune.spaces["hist_gradient_boosting"]["max_depth"].choices == (None, 3, 6)
    assert (tune.n_trials, tune.cv_folds, tune.pruner, tune.storage) == (20, 3, "median", None)


@pytest.mark.parametrize(
    ("family", "space", "message"),
    [
        (LR, {"C": {"type": "float", "low": 10, "high": 1}}, r"C[\s\S]*low 10 > high 1"),
        (LR, {"Cee": {"type": "float", "low": 0.1, "high": 1}}, r"logistic_regression\.Cee: not a hyperparameter"),
        (LR, {"C": {"type": "float", "low": "abc", "high": 1}}, r"C[\s\S]*low[\s\S]*valid number"),
        (LR, {"l1_ratio": {"type": "categorical", "choices": []}}, r"l1_ratio[\s\S]*non-empty `choices`"),
        ("xgboost", {"eta": {"type": "float", "low": 0.1, "high": 1}}, r"unknown model family 'xgboost'"),
        (LR, {"C": {"type": "float", "low": 0.1}}, r"C[\s\S]*needs both `low` and `high`"),
        (LR, {"C": {"type": "float", "low": 0, "high": 1, "log": True}}, r"C[\s\S]*log scale needs low > 0"),
        ("hist_gradient_boosting", {"max_iter": {"type": "int", "low": 10.5, "high": 100}}, r"whole-number"),
        (
            "hist_gradient_boosting",
            {"learning_rate": {"type": "float", "low": 0.0, "high": 0.3}},
            r"hist_gradient_boosting\.learning_rate: value 0\.0 is invalid",
        ),
        (LR, {"C": {"type": "categorical", "choices": [1.0], "low": 0.1}}, r"categorical takes `choices` only"),
        (LR, {"C": {"type": "float", "low": 0.1, "high": 1, "step": 0.1}}, r"step[\s\S]*unknown key"),
    ],
)
def test_space_errors_name_the_family_and_key(family: str, space: dict, message: str) -> None:
    raw = shipped_params()
    raw["tune"]["spaces"] = {family: space}
    with pytest.raises(ConfigError, match=message):
        check_settings(parse_params(raw))


@pytest.mark.parametrize("bad", [{"cv_folds": 1}, {"sampler": "bayes"}, {"n_trials": 0}, {"pruner": "hyperband"}])
def test_tune_settings_are_validated(bad: dict) -> None:
    with pytest.raises(ValidationError):
        TuneParams(**bad)


def test_grid_discretises_ranges_to_grid_points_log_spaced_when_log() -> None:
    linear = grid_values(ParamSpec(type="float", low=0.0, high=1.0), 5)
    assert linear == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    logged = grid_values(ParamSpec(type="float", low=0.01, high=100.0, log=True), 5)
    assert logged == pytest.approx([0.01, 0.1, 1.0, 10.0, 100.0])
    assert grid_values(ParamSpec(type="int", low=1, high=1000, log=True), 4) == [1, 10, 100, 1000]
    assert grid_values(ParamSpec(type="int", low=2, high=4), 5) == [2, 3, 4]  # rounded, no duplicates
    assert grid_values(ParamSpec(type="categorical", choices=["a", None]), 5) == ["a", None]


# --- studies ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["grid", "random", "tpe"])
def test_each_sampler_runs_a_study_end_to_end(data, sampler: str) -> None:
    seen: list[dict] = []
    result = run(data, settings(C_SPACE, sampler=sampler), trial_callback=seen.append)
    assert result.sampler == sampler
    assert result.n_trials == result.n_complete == 4 and result.n_pruned == 0
    assert [row["number"] for row in seen] == [0, 1, 2, 3]
    assert all(row["state"] == "COMPLETE" and len(row["fold_scores"]) == 3 for row in seen)
    assert all(row["value"] == pytest.approx(np.mean(row["fold_scores"])) for row in seen)
    assert result.best_score == max(row["value"] for row in seen)
    assert set(result.best_params) == {"C", "fit_intercept"}
    assert 0.7 < result.best_score <= 1.0  # the label is learnable from a and colour
    assert result.folds_computed == result.folds_possible == 12


def test_grid_search_visits_each_grid_point_once_and_stops(data) -> None:
    space = {
        "C": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
        "fit_intercept": {"type": "categorical", "choices": [True, False]},
    }
    result = run(data, settings(space, sampler="grid", grid_points=3, n_trials=20))
    visited = sorted((round(row["params"]["C"], 6), row["params"]["fit_intercept"]) for row in result.trials)
    assert visited == sorted(itertools.product([0.01, 0.1, 1.0], [False, True]))
    assert result.n_trials == 6


# With an L1 penalty, C=1e-6 zeroes every coefficient: a constant model, AUC 0.5 on every fold. It is a third of
# the choices, so the median of the other trials' running AUC stays well above it.
HOPELESS = {"C": {"type": "categorical", "choices": [1.0, 0.3, 1e-6]}}
L1 = {"solver": "saga", "l1_ratio": 1.0}


def test_median_pruner_stops_hopeless_trials_after_few_folds(data) -> None:
    result = run(data, settings(HOPELESS, sampler="random", n_trials=12, pruner="median"), fixed=L1)
    pruned = [row for row in result.trials if row["state"] == "PRUNED"]
    assert result.n_pruned == len(pruned) >= 1
    assert all(len(row["fold_scores"]) < 3 for row in pruned)
    # Past the pruner's 5 startup trials every hopeless trial is stopped early (a good one just under the median
    # of the running means may be too: that is the rule working, not a bug).
    hopeless = [row for row in result.trials if row["params"]["C"] == 1e-6 and row["number"] >= 5]
    assert hopeless and all(row["state"] == "PRUNED" for row in hopeless)
    assert result.folds_computed < result.folds_possible
    assert result.best_params["C"] != 1e-6

    unpruned = run(data, settings(HOPELESS, sampler="random", n_trials=12, pruner="none"), fixed=L1)
    assert unpruned.n_pruned == 0 and unpruned.folds_computed == unpruned.folds_possible
    assert unpruned.best_score == result.best_score


def test_median_rule_compares_the_running_mean_not_the_best_prefix() -> None:
    """After an easy first fold every trial's best prefix mean is high: only the current mean shows a bad trial."""
    from optiflow.modeling.tuning import _pruner

    study = optuna.create_study(direction="maximize", pruner=_pruner(TuneParams(pruner="median")))
    for _ in range(5):
        study.add_trial(optuna.trial.create_trial(value=0.8, intermediate_values={0: 0.9, 1: 0.8, 2: 0.8}))
    good, bad = study.ask(), study.ask()
    for trial, second in ((good, 0.85), (bad, 0.7)):
        trial.report(0.95, 0)
        assert not trial.should_prune()  # warm-up: never after the first fold
        trial.report(second, 1)
    assert not good.should_prune() and bad.should_prune()


def test_successive_halving_pruner_runs(data) -> None:
    result = run(data, settings(HOPELESS, sampler="random", n_trials=8, pruner="successive_halving"), fixed=L1)
    assert result.pruner == "successive_halving" and result.n_trials == 8
    assert result.n_complete + result.n_pruned == 8


def test_resuming_from_sqlite_continues_the_trial_count(data, tmp_path: Path) -> None:
    tune = settings(C_SPACE, sampler="random", n_trials=5, storage=f"sqlite:///{tmp_path / 'optuna.db'}")

    def crash_after_three(row: dict) -> None:
        if row["number"] == 2:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        run(data, tune, trial_callback=crash_after_three)
    resumed = run(data, tune.model_copy(update={"n_trials": 3}))
    assert resumed.n_trials == 6 and [row["number"] for row in resumed.trials] == list(range(6))
    first, second = ({row["params"]["C"] for row in resumed.trials[part]} for part in (slice(0, 3), slice(3, 6)))
    assert not first & second  # the resumed sampler proposes new points, not a replay of the first ones
    stored = optuna.load_study(study_name=resumed.study_name, storage=tune.storage)
    assert len(stored.trials) == 6

    changed = {**C_SPACE, "C": {"type": "float", "low": 1e-2, "high": 10.0, "log": True}}
    fresh = run(data, settings(changed, sampler="random", n_trials=3, storage=tune.storage))
    assert fresh.study_name != resumed.study_name and fresh.n_trials == 3


def test_parallel_trials_report_each_trial_once(data) -> None:
    seen: list[dict] = []
    result = run(data, settings(C_SPACE, sampler="random", n_trials=6, n_jobs=2), trial_callback=seen.append)
    assert result.n_trials == 6 and sorted(row["number"] for row in seen) == list(range(6))


def _in_threads(fn, items):
    """A fan-out like the thread task runner's: every item at once, results in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(fn, items))


@pytest.mark.parametrize("fan_out", [_in_threads, None], ids=["threads", "serial"])
def test_a_study_shared_by_workers_proposes_what_one_worker_does(data, tmp_path: Path, fan_out) -> None:
    """Random search is keyed by trial number, so splitting the trials over workers changes nothing but timing:
    the same points, the same scores (no pruning: which trials a pruner stops depends on who finished first)."""
    tune = settings(C_SPACE, sampler="random", n_trials=7, pruner="none")
    alone = run(data, tune)
    seen: list[dict] = []
    shared = run(
        data,
        tune.model_copy(update={"storage": f"sqlite:///{tmp_path / 'optuna.db'}"}),
        trial_callback=seen.append,
        workers=3,
        **({"fan_out": fan_out} if fan_out else {}),
    )
    points = {(row["number"], row["params"]["C"], row["params"]["fit_intercept"], row["value"]) for row in alone.trials}
    assert {(r["number"], r["params"]["C"], r["params"]["fit_intercept"], r["value"]) for r in shared.trials} == points
    assert shared.best_params == alone.best_params and shared.best_score == alone.best_score
    assert shared.summary().keys() == alone.summary().keys() and shared.n_trials == 7
    assert sorted(row["number"] for row in seen) == list(range(7))


def test_shares_of_a_study_split_the_trials_evenly_and_need_shared_storage(data) -> None:
    from optiflow.modeling.tuning import split_evenly

    assert split_evenly(7, 3) == [3, 2, 2] and split_evenly(2, 4) == [1, 1, 0, 0] and sum(split_evenly(20, 6)) == 20
    with pytest.raises(TuningError, match=r"2 tuning workers need a shared tune\.storage"):
        run(data, settings(C_SPACE, sampler="random"), workers=2)


def test_each_parallel_worker_caps_its_native_threads(data, monkeypatch) -> None:
    """OpenMP limits are per thread: a cap set by the main thread alone would not reach Optuna's worker threads."""
    from threadpoolctl import threadpool_info

    import optiflow.modeling.families as families

    threads_seen: list[set[int]] = []
    build = families.build_pipeline

    def spy(*args: Any, **kwargs: Any):
        threads_seen.append({pool["num_threads"] for pool in threadpool_info()})
        return build(*args, **kwargs)

    monkeypatch.setattr(families, "build_pipeline", spy)
    run(data, settings(C_SPACE, sampler="random", n_trials=4, n_jobs=2, threads_per_trial=1))
    assert len(threads_seen) == 12 and all(seen == {1} for seen in threads_seen)


def test_multi_objective_returns_a_pareto_front(data) -> None:
    result = run(data, settings(C_SPACE, n_trials=5, multi_objective=True, pruner="none"))
    assert result.sampler == "nsga2" and result.pareto
    front = [(point["roc_auc"], point[LATENCY]) for point in result.pareto]
    for auc, latency in front:  # no point of the front is dominated by a complete trial
        assert not any(
            row["value"] >= auc and row[LATENCY] <= latency and (row["value"], row[LATENCY]) != (auc, latency)
            for row in result.trials
        )
    assert result.best_params == result.pareto[0]["params"] and result.best_score == max(a for a, _ in front)
    assert "pareto_front" in result.summary()


def test_a_space_where_every_trial_fails_is_a_clear_error(data) -> None:
    with pytest.raises(TuningError, match=r"logistic_regression: no trial completed[\s\S]*lbfgs"):
        run(data, settings({"l1_ratio": {"type": "categorical", "choices": [1.0]}}, n_trials=2))


# --- figures and outputs ---------------------------------------------------------------------------------------


def test_importances_and_figures(data) -> None:
    result = run(data, settings(C_SPACE, sampler="random", n_trials=6))
    assert set(result.importances) == {"C", "fit_intercept"}
    assert sum(result.importances.values()) == pytest.approx(1.0)
    history = history_figure(result)
    assert sum(len(c.get_offsets()) for c in history.axes[0].collections) == result.n_complete + result.n_pruned
    assert [p.get_width() for p in importance_figure(result).axes[0].patches]

    single = run(data, settings({"C": C_SPACE["C"]}, sampler="random", n_trials=3))
    assert single.importances == {} and "2 varying hyperparameters" in single.importance_note
    texts = [t.get_text() for t in importance_figure(single).axes[0].texts]
    assert any("2 varying hyperparameters" in text for text in texts)

    rows = trial_table(result)
    assert [r["trial"] for r in rows] == list(range(6))
    assert rows[-1]["best_so_far"] == result.best_score


def test_tuned_hyperparameters_overlay_best_params_and_leave_others(tmp_path: Path) -> None:
    (tmp_path / f"{LR}.json").write_text(json.dumps({"best_params": {"C": 0.3, "l1_ratio": 0.5}}))
    base = {LR: {"C": 1.0, "max_iter": 100}, "hist_gradient_boosting": {"learning_rate": 0.05}}
    merged = tuned_hyperparameters(base, tmp_path)
    assert merged == {
        LR: {"C": 0.3, "max_iter": 100, "l1_ratio": 0.5},
        "hist_gradient_boosting": {"learning_rate": 0.05},
    }
    assert base[LR] == {"C": 1.0, "max_iter": 100}
