"""Hyperparameter tuning: search spaces from params.yaml and one Optuna study per model family.

Trials are scored by stratified k-fold CV ROC AUC on the training rows only, so the test split never shapes the
chosen hyperparameters. optuna and sklearn load inside functions, so importing this module stays quick.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from optiflow.config import ParamSpec, TuneParams
from optiflow.errors import OptiflowError
from optiflow.parallel import FanOut, run_serially
from optiflow.timing import timed

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from matplotlib.figure import Figure

    from optiflow.data.schema import Schema

log = logging.getLogger(__name__)

OBJECTIVE = "roc_auc"
LATENCY = "latency_ms_per_1000_rows"
TrialCallback = Callable[[dict[str, Any]], None]


class TuningError(OptiflowError):
    """A study could not produce a usable result (e.g. every trial failed)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class TuningResult:
    """What one family's study found, plus the per-trial record behind the plots and the MLflow child runs."""

    family: str
    study_name: str
    sampler: str
    pruner: str
    cv_folds: int
    best_params: dict[str, Any]
    best_score: float
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int
    folds_computed: int
    folds_possible: int
    trials: tuple[dict[str, Any], ...]
    importances: dict[str, float]
    importance_note: str
    pareto: tuple[dict[str, Any], ...] | None = None

    def summary(self) -> dict[str, Any]:
        """The <family>.json payload: everything but the per-trial table, which goes to the CSV."""
        payload = {
            "family": self.family,
            "objective": f"cv_{OBJECTIVE}",
            "best_params": self.best_params,
            "best_score": self.best_score,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "cv_folds": self.cv_folds,
            "study_name": self.study_name,
            "trials_used": self.n_trials,
            "complete": self.n_complete,
            "pruned": self.n_pruned,
            "failed": self.n_failed,
            "folds_computed": self.folds_computed,
            "folds_possible": self.folds_possible,
            "importances": self.importances,
        }
        if self.pareto is not None:
            payload["pareto_front"] = list(self.pareto)
        return payload


def grid_values(param: ParamSpec, points: int) -> list[Any]:
    """Discretise one range for grid search: `points` values, geometric when log; ints rounded and deduplicated."""
    if param.type == "categorical":
        return list(param.choices or ())
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    values = np.geomspace(low, high, points) if param.log else np.linspace(low, high, points)
    if param.type == "int":
        return sorted(set(np.rint(values).astype(int).tolist()))
    return [float(value) for value in values]


def study_name(
    family: str, space: Mapping[str, ParamSpec], tune: TuneParams, seed: int, fixed: Mapping[str, Any], data_hash: str
) -> str:
    """Family + sampler + a hash of everything that makes old trials comparable, so a change starts a fresh study."""
    identity = {
        "space": {key: param.model_dump(mode="json") for key, param in sorted(space.items())},
        "fixed": dict(sorted(fixed.items())),
        "cv_folds": tune.cv_folds,
        "grid_points": tune.grid_points if tune.sampler == "grid" else None,
        "multi_objective": tune.multi_objective,
        "seed": seed,
        "data": data_hash,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    sampler = "nsga2" if tune.multi_objective else tune.sampler
    return f"optiflow-{family}-{sampler}-{digest}"


@dataclass(frozen=True)
class TrialShare:
    """One worker's part of a study: everything it needs to load the shared study and run its trials.

    Plain picklable data, so a share can run in another process (a Dask worker) as well as in a thread.
    """

    family: str
    space: Mapping[str, ParamSpec]
    fixed: Mapping[str, Any]
    features: pd.DataFrame
    target: np.ndarray
    schema: Schema
    tune: TuneParams
    seed: int
    worker: int
    n_trials: int
    study_name: str
    threads: int


def tune_family(
    family: str,
    space: Mapping[str, ParamSpec],
    train_frame: pd.DataFrame,
    y: np.ndarray,
    schema: Schema,
    tune: TuneParams,
    seed: int,
    trial_callback: TrialCallback | None = None,
    *,
    fixed: Mapping[str, Any] | None = None,
    progress_bar: bool = True,
    workers: int = 1,
    fan_out: FanOut = run_serially,
) -> TuningResult:
    """Run (or resume) the family's study and summarise it.

    `fixed` holds hyperparameters kept constant (train.families), so each trial scores the model train will fit.
    `n_trials` counts trials run by this call; a persistent storage adds them to the trials already there.
    `trial_callback` gets one dict per finished trial, serialised under a lock (it may run in a worker thread).
    `workers` > 1 splits the trials into that many shares of one study in `tune.storage` (which must be shared,
    e.g. SQLite or PostgreSQL) and runs them through `fan_out`; the callback then gets the trials at the end.
    """
    import optuna
    import pandas as pd

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    features = train_frame[list(schema.features)]
    target = np.asarray(y)
    fixed = dict(fixed or {})
    data_hash = hashlib.sha256(
        pd.util.hash_pandas_object(features, index=False).to_numpy().tobytes() + target.tobytes()
    ).hexdigest()
    name = study_name(family, space, tune, seed, fixed, data_hash)
    if workers > 1 and tune.storage is None:
        raise TuningError(f"{family}: {workers} tuning workers need a shared tune.storage (SQLite or PostgreSQL URL)")
    # Created once, before any worker starts: concurrent creators of one shared study race (see APIS.md).
    study = _create_study(tune, name)
    already = len(study.get_trials(deepcopy=False))
    if tune.multi_objective and (tune.sampler != "tpe" or tune.pruner != "none"):
        log.warning("%s: multi_objective uses NSGA-II without pruning; tune.sampler/pruner are ignored", family)
    # Native thread pools per trial: parallel workers share the cores, or thread teams oversubscribe them and stall.
    threads = tune.threads_per_trial or max(1, available_cores() // (tune.n_jobs * workers))
    log.info(
        "%s: study %s has %d trial(s); running %d more in %d share(s) with the %s sampler",
        family,
        name,
        already,
        tune.n_trials,
        workers,
        "nsga2" if tune.multi_objective else tune.sampler,
    )
    if workers == 1:
        # Offset by the trials already stored, or a resumed seeded sampler would propose the same points again.
        study.sampler = _sampler(tune, space, seed, offset=already)
        objective = _objective(family, space, fixed, features, target, schema, tune, seed, threads)
        _optimize_here(study, objective, family, tune, threads, trial_callback, progress_bar)
        return _summarise(study, family, tune, seed)

    shares = [
        TrialShare(family, space, fixed, features, target, schema, tune, seed, worker, count, name, threads)
        for worker, count in enumerate(split_evenly(tune.n_trials, workers))
        if count
    ]
    fan_out(run_trial_share, shares)
    study = _load_study(tune, name)
    if trial_callback is not None:
        for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
            if trial.number >= already and trial.state.is_finished():
                trial_callback(_trial_row(trial))
    return _summarise(study, family, tune, seed)


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` items in `parts` shares that differ by at most one, the larger ones first."""
    return [total // parts + (1 if part < total % parts else 0) for part in range(parts)]


def run_trial_share(share: TrialShare) -> int:
    """A worker's share: load the shared study, run its trials with its own sampler seed; returns the trials run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _load_study(share.tune, share.study_name)
    already = len(study.get_trials(deepcopy=False))
    # Distinct per worker: workers seeded alike would propose the same points at the same time.
    study.sampler = _sampler(share.tune, share.space, share.seed, offset=already + 1000 * share.worker)
    objective = _objective(
        share.family,
        share.space,
        dict(share.fixed),
        share.features,
        share.target,
        share.schema,
        share.tune,
        share.seed,
        share.threads,
    )
    tune = share.tune.model_copy(update={"n_trials": share.n_trials})
    _optimize_here(study, objective, share.family, tune, share.threads, None, progress_bar=False)
    return share.n_trials


def _optimize_here(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    family: str,
    tune: TuneParams,
    threads: int,
    trial_callback: TrialCallback | None,
    progress_bar: bool,
) -> None:
    """`tune.n_trials` trials of the study in this process (tune.n_jobs threads), with a progress bar."""
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    lock = threading.Lock()
    best_seen = [-math.inf]
    with tqdm(total=tune.n_trials, desc=f"tune {family}", unit="trial", disable=None if progress_bar else True) as bar:

        def on_finished(_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            with lock:
                row = _trial_row(trial)
                if row["state"] == "COMPLETE" and row["value"] is not None and row["value"] > best_seen[0]:
                    best_seen[0] = row["value"]
                    bar.set_postfix_str(f"best={row['value']:.4f}", refresh=False)
                bar.update(1)
                if trial_callback is not None:
                    trial_callback(row)

        with threadpool_limits(limits=threads, user_api="blas"):  # process-wide; OpenMP is per thread, below
            study.optimize(
                objective,
                n_trials=tune.n_trials,
                timeout=tune.timeout,
                n_jobs=tune.n_jobs,
                catch=(ValueError,),
                callbacks=[on_finished],
            )


JOURNAL = "journal:///"  # an Optuna journal file: journal:///path/to/study.journal


def open_storage(url: str | None) -> optuna.storages.BaseStorage | None:
    """The study storage for a URL: None keeps studies in memory. A journal file (``journal:///path``) is an
    append-only log with file locks, for processes of one machine: about 24 ms per trial for two writers where SQLite
    took 166 ms (bench/scale.py). SQLite waits up to a minute for a lock held by another worker (the default 5 s fails
    under parallel writers); server databases check pooled connections."""
    import optuna

    if url is None:
        return None
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len(JOURNAL) :]))
    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    for bare in ("postgresql://", "postgres://"):  # SQLAlchemy 2.1 reads these as psycopg 3; psycopg2 is installed
        if url.startswith(bare):
            url = "postgresql+psycopg2://" + url[len(bare) :]
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def _create_study(tune: TuneParams, name: str) -> optuna.Study:
    import optuna

    directions = ["maximize", "minimize"] if tune.multi_objective else ["maximize"]
    return optuna.create_study(
        storage=open_storage(tune.storage),
        study_name=name,
        directions=directions,
        load_if_exists=True,
        pruner=_pruner(tune),
    )


def _load_study(tune: TuneParams, name: str) -> optuna.Study:
    import optuna

    return optuna.load_study(study_name=name, storage=open_storage(tune.storage), pruner=_pruner(tune))


def available_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. taskset or a container's cpuset), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _sampler(
    tune: TuneParams, space: Mapping[str, ParamSpec], seed: int, offset: int = 0
) -> optuna.samplers.BaseSampler:
    """`offset` shifts the seed of samplers whose proposals follow their own random stream (resumed studies,
    parallel workers); random search is keyed by trial number instead and needs none."""
    import optuna

    if tune.multi_objective:
        return optuna.samplers.NSGAIISampler(seed=seed + offset)
    if tune.sampler == "grid":
        grid = {key: grid_values(param, tune.grid_points) for key, param in space.items()}
        return optuna.samplers.GridSampler(grid, seed=seed + offset)
    if tune.sampler == "random":
        return _trial_keyed_random_sampler(seed)
    return optuna.samplers.TPESampler(seed=seed + offset)


def _trial_keyed_random_sampler(seed: int) -> optuna.samplers.BaseSampler:
    """Random search whose every value depends only on (seed, trial number, name), not on which worker or in what
    order trials run: a study split over any number of workers proposes the same points as one worker would."""
    import optuna

    class TrialKeyedRandomSampler(optuna.samplers.RandomSampler):
        def sample_independent(
            self,
            study: optuna.Study,
            trial: optuna.trial.FrozenTrial,
            param_name: str,
            param_distribution: optuna.distributions.BaseDistribution,
        ) -> Any:
            key = hashlib.sha256(f"{seed}:{trial.number}:{param_name}".encode()).digest()
            draw = optuna.samplers.RandomSampler(seed=int.from_bytes(key[:4], "little"))
            return draw.sample_independent(study, trial, param_name, param_distribution)

    return TrialKeyedRandomSampler(seed=seed)


def _pruner(tune: TuneParams) -> optuna.pruners.BasePruner:
    import optuna

    if tune.multi_objective or tune.pruner == "none":
        return optuna.pruners.NopPruner()
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return _fold_median_pruner()


def _fold_median_pruner(n_startup_trials: int = 5, n_warmup_steps: int = 1) -> optuna.pruners.BasePruner:
    """The median stopping rule on the running CV mean: stop a trial whose mean over its first folds is below the
    median of the complete trials' means over the same folds.

    Optuna's MedianPruner compares a trial's best value over all its steps instead; over CV folds that is whichever
    prefix mean was highest, so when an easy fold comes first no trial ever falls below the median (bench/tuning.py
    measured 0-6% of folds saved with it on the shipped data).
    """
    import optuna
    from optuna.trial import TrialState

    class FoldMedianPruner(optuna.pruners.BasePruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            step = trial.last_step
            if step is None or step < n_warmup_steps:
                return False
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if len(complete) < n_startup_trials:
                return False
            others = [t.intermediate_values[step] for t in complete if step in t.intermediate_values]
            return bool(others) and trial.intermediate_values[step] < float(np.median(others))

    return FoldMedianPruner()


def _suggest(trial: optuna.Trial, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, param in space.items():
        if param.type == "categorical":
            values[key] = trial.suggest_categorical(key, list(param.choices or ()))
        elif param.type == "int":
            values[key] = trial.suggest_int(key, int(param.low), int(param.high), log=param.log)  # type: ignore[arg-type]
        else:
            values[key] = trial.suggest_float(key, float(param.low), float(param.high), log=param.log)  # type: ignore[arg-type]
    return values


def _objective(
    family: str,
    space: Mapping[str, ParamSpec],
    fixed: dict[str, Any],
    features: pd.DataFrame,
    target: np.ndarray,
    schema: Schema,
    tune: TuneParams,
    seed: int,
    threads: int,
) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    """Stratified k-fold CV; the running mean AUC is reported after each fold so the pruner can stop a trial early.

    `threads` caps OpenMP (HistGradientBoosting) inside the trial: its limit is per calling thread, so it must be set
    in the Optuna worker thread itself; a limit set by the main thread does not reach the workers.
    """
    import optuna
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    from optiflow.modeling.families import build_pipeline

    # The same folds for every trial: pruning compares trials fold by fold, which only means something then.
    folds = list(StratifiedKFold(n_splits=tune.cv_folds, shuffle=True, random_state=seed).split(features, target))

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        with threadpool_limits(limits=threads, user_api="openmp"):
            return cross_validate(trial)

    def cross_validate(trial: optuna.Trial) -> float | tuple[float, float]:
        hyperparameters = {**fixed, **_suggest(trial, space)}
        scores: list[float] = []
        latencies: list[float] = []
        for step, (fit_rows, score_rows) in enumerate(folds):
            try:
                model = build_pipeline(family, hyperparameters, schema, seed)
                model.fit(features.iloc[fit_rows], target[fit_rows])
                probabilities, seconds = timed(functools.partial(model.predict_proba, features.iloc[score_rows]))
                probabilities = probabilities[:, 1]
                latencies.append(seconds * 1e6 / len(score_rows))
                scores.append(float(roc_auc_score(target[score_rows], probabilities)))
            except ValueError as exc:  # e.g. a penalty the solver lacks: the trial fails, the study goes on
                trial.set_user_attr("error", str(exc))
                raise
            trial.set_user_attr("fold_scores", list(scores))
            if tune.multi_objective:
                continue
            trial.report(float(np.mean(scores)), step)
            # Pruning after the last fold saves nothing and would discard a fully computed score.
            if step < len(folds) - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"running CV AUC {np.mean(scores):.4f} after {step + 1} fold(s)")
        if tune.multi_objective:
            latency = float(np.median(latencies))
            trial.set_user_attr(LATENCY, latency)
            return float(np.mean(scores)), latency
        return float(np.mean(scores))

    return objective


def _trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One finished trial as plain data; a pruned trial's value is its running mean when it was stopped."""
    values = trial.values
    row = {
        "number": trial.number,
        "state": trial.state.name,
        "value": None if not values else float(values[0]),
        "params": dict(trial.params),
        "fold_scores": list(trial.user_attrs.get("fold_scores", [])),
    }
    if LATENCY in trial.user_attrs:
        row[LATENCY] = trial.user_attrs[LATENCY]
    if "error" in trial.user_attrs:
        row["error"] = trial.user_attrs["error"]
    return row


def _summarise(study: optuna.Study, family: str, tune: TuneParams, seed: int) -> TuningResult:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    rows = tuple(_trial_row(trial) for trial in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if not complete:
        reasons = sorted({str(t.user_attrs.get("error", "unknown error")) for t in failed})[:3]
        raise TuningError(
            f"{family}: no trial completed ({len(pruned)} pruned, {len(failed)} failed); "
            f"first errors: {reasons}. Check tune.spaces.{family} against the estimator's constraints."
        )
    pareto = None
    if tune.multi_objective:
        front = sorted(study.best_trials, key=lambda t: -t.values[0])
        pareto = tuple(
            {"number": t.number, OBJECTIVE: float(t.values[0]), LATENCY: float(t.values[1]), "params": dict(t.params)}
            for t in front
        )
        best = front[0]  # the most accurate point of the front: train needs one parameter set
    else:
        best = study.best_trial
    importances, note = _importances(study, complete, tune.multi_objective, seed)
    finished = len(complete) + len(pruned)
    return TuningResult(
        family=family,
        study_name=study.study_name,
        sampler="nsga2" if tune.multi_objective else tune.sampler,
        pruner="none" if tune.multi_objective else tune.pruner,
        cv_folds=tune.cv_folds,
        best_params=dict(best.params),
        best_score=float(best.values[0]),
        n_trials=len(trials),
        n_complete=len(complete),
        n_pruned=len(pruned),
        n_failed=len(failed),
        folds_computed=sum(len(t.user_attrs.get("fold_scores", [])) for t in (*complete, *pruned)),
        folds_possible=finished * tune.cv_folds,
        trials=rows,
        importances=importances,
        importance_note=note,
        pareto=pareto,
    )


def _importances(
    study: optuna.Study, complete: list[optuna.trial.FrozenTrial], multi_objective: bool, seed: int
) -> tuple[dict[str, float], str]:
    """fANOVA importances of the AUC, or an empty dict and the reason they cannot be estimated."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    varying = sorted({key for t in complete for key, d in t.distributions.items() if not d.single()})
    if len(complete) < 2:
        return {}, f"importances need at least 2 complete trials; this study has {len(complete)}"
    if len(varying) < 2:
        return {}, f"importances need at least 2 varying hyperparameters; the space varies {varying or 'none'}"
    if len({t.values[0] for t in complete}) < 2:
        return {}, "every complete trial scored the same: no hyperparameter explains any variation"
    importances = get_param_importances(
        study,
        evaluator=FanovaImportanceEvaluator(seed=seed),
        params=varying,
        target=(lambda t: t.values[0]) if multi_objective else None,
    )
    return {key: float(value) for key, value in importances.items()}, "fANOVA importance of the CV ROC AUC"


def trial_table(result: TuningResult) -> list[dict[str, Any]]:
    """Flat rows (one per trial, params as columns) for the trials CSV, DVC plots and the Prefect table."""
    keys = sorted({key for row in result.trials for key in row["params"]})
    best_so_far = -math.inf
    table = []
    for row in sorted(result.trials, key=lambda r: r["number"]):
        if row["state"] == "COMPLETE" and row["value"] is not None:
            best_so_far = max(best_so_far, row["value"])
        flat = {
            "trial": row["number"],
            "state": row["state"],
            OBJECTIVE: row["value"],
            "best_so_far": None if best_so_far == -math.inf else best_so_far,
            "folds": len(row["fold_scores"]),
        }
        if result.pareto is not None:
            flat[LATENCY] = row.get(LATENCY)
        flat.update({key: row["params"].get(key) for key in keys})
        table.append(flat)
    return table


def top_trials(result: TuningResult, limit: int = 10) -> list[dict[str, Any]]:
    """The best complete trials first (then pruned ones by their running score): the Prefect table."""
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}
    rows = trial_table(result)
    rows.sort(key=lambda r: (order.get(r["state"], 3), -(r[OBJECTIVE] if r[OBJECTIVE] is not None else -math.inf)))
    return [{k: v for k, v in row.items() if k != "best_so_far"} for row in rows[:limit]]


def history_figure(result: TuningResult) -> Figure:
    """Optimisation history: each complete trial's CV AUC, the best so far, and where trials were pruned.

    Pruned trials are marked along the bottom, not at their running mean: a mean over the first folds is not on
    the scale of a full CV mean and would read as a better score than it is.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = trial_table(result)
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    complete = [(r["trial"], r[OBJECTIVE]) for r in rows if r["state"] == "COMPLETE" and r[OBJECTIVE] is not None]
    if complete:
        xs, ys = zip(*complete, strict=True)
        axes.scatter(xs, ys, color="tab:blue", s=20, label="complete")
    pruned = [r["trial"] for r in rows if r["state"] == "PRUNED"]
    if pruned:
        axes.scatter(
            pruned,
            [0.02] * len(pruned),
            marker="|",
            color="tab:grey",
            s=80,
            transform=axes.get_xaxis_transform(),
            label=f"pruned ({len(pruned)})",
        )
    best = [(r["trial"], r["best_so_far"]) for r in rows if r["best_so_far"] is not None]
    if best:
        xs, ys = zip(*best, strict=True)
        axes.step(xs, ys, where="post", color="tab:red", label="best so far")
    axes.set(
        xlabel="trial",
        ylabel=f"CV {OBJECTIVE} ({result.cv_folds} folds)",
        title=f"{result.family}: {result.sampler} search, best {result.best_score:.4f}",
    )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    return figure


def importance_figure(result: TuningResult) -> Figure:
    """Hyperparameter importances as bars, or a figure that says why none could be estimated."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    if not result.importances:
        axes.axis("off")
        axes.text(
            0.5, 0.5, f"{result.family}: no importances\n{result.importance_note}", ha="center", va="center", wrap=True
        )
        return figure
    ranked = sorted(result.importances.items(), key=lambda item: item[1])
    axes.barh([key for key, _ in ranked], [value for _, value in ranked], color="tab:blue")
    axes.set(xlabel="importance (fANOVA, normalised)", title=f"{result.family}: hyperparameter importance")
    figure.tight_layout()
    return figure


def pareto_figure(result: TuningResult) -> Figure:
    """Multi-objective studies: every complete trial's AUC against latency, the Pareto front highlighted."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    points = [(r[LATENCY], r["value"]) for r in result.trials if r["state"] == "COMPLETE" and LATENCY in r]
    if points:
        xs, ys = zip(*points, strict=True)
        axes.scatter(xs, ys, color="tab:grey", s=15, label="trials")
    front = sorted(result.pareto or (), key=lambda p: p[LATENCY])
    if front:
        axes.plot(
            [p[LATENCY] for p in front], [p[OBJECTIVE] for p in front], "o-", color="tab:red", label="Pareto front"
        )
    axes.set(
        xlabel="inference latency (ms per 1000 rows)",
        ylabel=f"CV {OBJECTIVE}",
        title=f"{result.family}: accuracy vs latency",
    )
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure


def tuned_hyperparameters(base: Mapping[str, Mapping[str, Any]], tuning_dir: Path) -> dict[str, dict[str, Any]]:
    """train.families with each tuned family's best params laid over it; families without a result keep theirs."""
    from optiflow.io import read_json

    merged = {}
    for family, hyperparameters in base.items():
        result = Path(tuning_dir) / f"{family}.json"
        tuned = read_json(result)["best_params"] if result.is_file() else {}
        merged[family] = {**(hyperparameters or {}), **tuned}
    return merged
