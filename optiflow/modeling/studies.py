"""The tune stage's studies: where they are stored, which families are tuned, and each family's study in turn.

Storage: tune.storage as given; with several workers and none set, a throwaway Optuna journal file for this run (a
remote Dask cluster cannot open a local file, so it needs a tune.storage every worker reaches); never a study database
inside the tuning output folder, which each run replaces. Tracking stays out of modeling: the stage wraps each
family's study in its tracking run (`StudyRunner`) and the trials reach it through the TrialCallback.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optiflow.config import DataParams, OrchestrationParams, ParamSpec, TuneParams
from optiflow.data.sampling import capped_rows
from optiflow.data.schema import Schema, resolve_schema
from optiflow.data.split import labels
from optiflow.errors import ConfigError
from optiflow.io import resolve_database_uri, sqlite_file, write_json, write_text, write_with
from optiflow.modeling.tuning import (
    JOURNAL,
    OBJECTIVE,
    TrialCallback,
    TuningResult,
    history_figure,
    importance_figure,
    pareto_figure,
    trial_table,
    tune_family,
)
from optiflow.parallel import FanOut, run_serially

log = logging.getLogger(__name__)

Study = Callable[[TrialCallback | None], TuningResult]
StudyRunner = Callable[[str, Mapping[str, ParamSpec], Study], TuningResult]
"""Runs one family's study (given its name and search space), handing the study the callback for its trials."""


@contextmanager
def study_settings(
    tune: TuneParams, root: Path, tuning_dir: Path, orchestration: OrchestrationParams
) -> Iterator[TuneParams]:
    """tune.* with the storage this run's studies use (see the module docstring), for as long as the block runs."""
    configured = resolve_database_uri(tune.storage, root)
    with shared_storage(configured, orchestration) as storage:
        check_storage(storage, tuning_dir)
        yield tune.model_copy(update={"storage": storage})


@contextmanager
def shared_storage(storage: str | None, orchestration: OrchestrationParams) -> Iterator[str | None]:
    """The study storage the workers share: `storage`, or with several workers and none set, a throwaway Optuna
    journal file for this run (a remote Dask cluster cannot open a local file: it needs a PostgreSQL tune.storage)."""
    workers = orchestration.workers
    if storage is not None or workers <= 1:
        yield storage
        return
    if orchestration.dask_address:
        raise ConfigError(
            f"orchestration.dask_address {orchestration.dask_address} with {workers} tuning workers needs a "
            "tune.storage every worker can reach, e.g. postgresql://user@db-host/optuna"
        )
    with tempfile.TemporaryDirectory(prefix="optiflow-optuna-") as folder:
        yield JOURNAL + str(Path(folder) / "optuna.journal")


def check_storage(storage: str | None, tuning_dir: Path) -> None:
    """Refuse a study database inside the output folder (each run replaces that folder) and create its parent."""
    database = sqlite_file(storage)
    if database is not None:
        database = database.resolve()
        if database.is_relative_to(tuning_dir.resolve()):
            raise ConfigError(
                f"tune.storage {storage!r} lies inside paths.tuning ({tuning_dir}), which each run replaces; "
                "put the study database elsewhere, e.g. sqlite:///optuna.db"
            )
        database.parent.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True, eq=False)
class TuningRows:
    """The train rows tuning sees (never valid or test rows): at most tune.max_rows of them, stratified."""

    frame: pd.DataFrame
    target: np.ndarray
    schema: Schema


def tuning_rows(train: pd.DataFrame, data: DataParams, max_rows: int | None, seed: int) -> TuningRows:
    frame = capped_rows(train, data, max_rows, seed)
    return TuningRows(frame, labels(frame, data), resolve_schema(frame, data))


def untracked(family: str, space: Mapping[str, ParamSpec], study: Study) -> TuningResult:
    return study(None)


def tune_families(
    rows: TuningRows,
    families: Mapping[str, Mapping[str, Any] | None],
    settings: TuneParams,
    seed: int,
    *,
    workers: int = 1,
    fan_out: FanOut = run_serially,
    run_study: StudyRunner = untracked,
) -> dict[str, TuningResult | str]:
    """One study per family with a search space (`workers` shares each through `fan_out`), run by `run_study`;
    a family without one keeps its train.families values, and the result says so."""
    results: dict[str, TuningResult | str] = {}
    unused = sorted(set(settings.spaces) - set(families))
    if unused:
        log.warning("tune.spaces has families that train.families does not train, not tuned: %s", unused)
    for family, base in families.items():
        space = settings.spaces.get(family)
        if not space:
            results[family] = "not tuned (no tune.spaces entry; params.yaml train.families values are used)"
            log.info("%s: not tuned, keeps its train.families hyperparameters", family)
            continue

        study = functools.partial(
            tune_family, family, space, rows.frame, rows.target, rows.schema, settings, seed,
            fixed=base or {}, workers=workers, fan_out=fan_out,
        )  # fmt: skip
        result = results[family] = run_study(family, space, study)
        log.info(
            "%s: best CV %s %.4f after %d trials (%d pruned, %d/%d folds computed): %s",
            family,
            OBJECTIVE,
            result.best_score,
            result.n_trials,
            result.n_pruned,
            result.folds_computed,
            result.folds_possible,
            result.best_params,
        )
    return results


def tuning_summary(results: Mapping[str, TuningResult | str]) -> dict[str, Any]:
    """Per family: the best score and params and the trial counts, or why it was not tuned."""
    return {
        family: result
        if isinstance(result, str)
        else {
            "best_score": round(result.best_score, 6),
            "best_params": result.best_params,
            "trials": result.n_trials,
            "pruned": result.n_pruned,
        }
        for family, result in results.items()
    }


def write_study_outputs(folder: Path, result: TuningResult) -> list[Path]:
    """<family>.json (what train reads), <family>-trials.csv and the plots, each written atomically into `folder`."""
    family = result.family
    summary = folder / f"{family}.json"
    write_json(summary, result.summary())
    trials = folder / f"{family}-trials.csv"
    write_text(trials, _csv(trial_table(result)))
    figures = {"history": history_figure(result), "importance": importance_figure(result)}
    if result.pareto is not None:
        figures["pareto"] = pareto_figure(result)
    written = [summary, trials]
    for name, figure in figures.items():
        path = folder / f"{family}-{name}.png"
        write_with(path, lambda tmp, figure=figure: figure.savefig(tmp, format="png", dpi=110))
        written.append(path)
    return written


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
