"""Tuning benchmark on the shipped data: sampler efficiency, fold computations saved by pruning, parallel speed-up.

Everything is measured in one run, side by side, on the same train split and search space, and printed as is:
  1. trials grid and random search need to reach the best CV ROC AUC that TPE reaches within N trials (>= 5 seeds);
  2. share of fold computations the median pruner saves (pruned vs NopPruner, same seeds), with both best scores;
  3. wall time of n_jobs=2 vs n_jobs=1 on the same grid of trials.

    python bench/tuning.py                 # 5 seeds, N=30, logistic regression (about 5 minutes on 2 idle cores)
    python bench/tuning.py --quick         # smoke run: 2 seeds, N=10, 1500 rows
    python bench/tuning.py --family hist_gradient_boosting   # the same on gradient boosting (several times slower)
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optiflow.config import TuneParams, load_config
from optiflow.data.ingest import load_dataset
from optiflow.data.schema import Schema, resolve_schema
from optiflow.data.split import labels, split_dataset
from optiflow.modeling.tuning import TuningResult, available_cores, grid_values, tune_family

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder

LR, HGB = "logistic_regression", "hist_gradient_boosting"
# Modest spaces: lbfgs (no saga) and 100 boosting iterations keep a trial well under a second on 4k rows.
SPACES: dict[str, dict[str, dict[str, Any]]] = {
    LR: {
        "C": {"type": "float", "low": 1e-4, "high": 100.0, "log": True},
        "class_weight": {"type": "categorical", "choices": [None, "balanced"]},
        "fit_intercept": {"type": "categorical", "choices": [True, False]},
    },
    HGB: {
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.5, "log": True},
        "max_leaf_nodes": {"type": "int", "low": 4, "high": 64, "log": True},
        "min_samples_leaf": {"type": "int", "low": 5, "high": 200, "log": True},
    },
}
FIXED: dict[str, dict[str, Any]] = {LR: {}, HGB: {"max_iter": 100}}
PARALLEL_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    LR: {
        "C": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
        "class_weight": {"type": "categorical", "choices": [None, "balanced"]},
    },
    HGB: {
        "learning_rate": {"type": "float", "low": 0.03, "high": 0.3, "log": True},
        "max_leaf_nodes": {"type": "int", "low": 8, "high": 31},
    },
}

Data = tuple[pd.DataFrame, np.ndarray, Schema]


class Reached(Exception):
    """Raised from the trial callback to stop a study as soon as it matches the target score."""


def load_train(params_path: str, rows: int | None) -> tuple[Data, int]:
    config = load_config(params_path)
    params = config.params
    frame, _ = load_dataset(config.source, params.data)
    train = split_dataset(frame, params.data, params.split, params.seed).train
    if rows is not None and rows < len(train):
        train = train.sample(n=rows, random_state=params.seed).reset_index(drop=True)
    return (train, labels(train, params.data), resolve_schema(train, params.data)), params.seed


def study(data: Data, family: str, tune: TuneParams, seed: int, callback: Any = None) -> TuningResult:
    frame, y, schema = data
    return tune_family(
        family, tune.spaces[family], frame, y, schema, tune, seed, callback, fixed=FIXED[family], progress_bar=False
    )


def trials_to_reach(data: Data, family: str, tune: TuneParams, seed: int, target: float) -> int | None:
    """Run the study until a complete trial scores >= target: that trial's count, or None if the budget ran out."""
    seen: list[dict[str, Any]] = []

    def stop_when_reached(row: dict[str, Any]) -> None:
        seen.append(row)
        if row["state"] == "COMPLETE" and row["value"] >= target:
            raise Reached

    try:
        study(data, family, tune, seed, stop_when_reached)
    except Reached:
        return len(seen)
    return None


def first_hit(result: TuningResult, target: float) -> int:
    ordered = sorted(result.trials, key=lambda row: row["number"])
    return next(i + 1 for i, row in enumerate(ordered) if row["state"] == "COMPLETE" and row["value"] >= target)


def sampler_efficiency(
    data: Data, family: str, seeds: list[int], n: int, cap: int, grid_points: int, folds: int, tolerance: float
) -> None:
    base = TuneParams(
        cv_folds=folds, pruner="none", grid_points=grid_points, threads_per_trial=1, spaces={family: SPACES[family]}
    )
    grid_size = math.prod(len(grid_values(param, grid_points)) for param in base.spaces[family].values())
    budgets = {"random": cap, "grid": min(cap, grid_size)}
    print(f"\n## 1. Trials needed to reach TPE's best CV ROC AUC within N={n} (no pruning, {folds}-fold CV)")
    print(
        f"random stops at {cap} trials; grid ({grid_points} points per range) has {grid_size} points and stops at "
        f"{budgets['grid']}: 'never' = the grid has no point that good, '>k' = not reached within k trials"
    )
    header = (
        f"{'seed':>6} | {'TPE best':>8} | {'TPE hit@':>8} | {'random':>6} | {'grid':>6} | {'random/TPE':>10} "
        f"| {'grid/TPE':>8} | {'random/N':>8} | {'grid/N':>6}"
    )
    print(header)
    print("-" * len(header))
    # (ratio, lower bound?) per seed: a sampler that ran out of budget needs more trials than the ratio says
    ratios: dict[str, list[tuple[float, bool]]] = {key: [] for key in ("random", "grid", "random_n", "grid_n")}
    loose: dict[str, list[str]] = {"random": [], "grid": []}
    for seed in seeds:
        tpe = study(data, family, base.model_copy(update={"sampler": "tpe", "n_trials": n}), seed)
        hit = first_hit(tpe, tpe.best_score)
        cells = {}
        for sampler, budget in budgets.items():
            tune = base.model_copy(update={"sampler": sampler, "n_trials": budget})
            needed = trials_to_reach(data, family, tune, seed, tpe.best_score)
            never = needed is None and sampler == "grid" and budget == grid_size
            if needed is None:
                cells[sampler] = "never" if never else f">{budget}"
                low = math.inf if never else budget  # a lower bound on the trials it would need
            else:
                cells[sampler], low = str(needed), needed
            bound = cells[sampler].startswith(">")
            ratios[sampler].append((low / hit, bound))
            ratios[f"{sampler}_n"].append((low / n, bound))
            loosely = trials_to_reach(data, family, tune, seed, tpe.best_score - tolerance)
            loose[sampler].append(f">{budget}" if loosely is None else str(loosely))
        print(
            f"{seed:>6} | {tpe.best_score:>8.5f} | {hit:>8} | {cells['random']:>6} | {cells['grid']:>6} | "
            + " | ".join(
                f"{_ratio(*ratios[key][-1]):>{width}}"
                for key, width in (("random", 10), ("grid", 8), ("random_n", 8), ("grid_n", 6))
            )
        )
    print(
        f"{'median':>6} | {'':>8} | {'':>8} | {'':>6} | {'':>6} | "
        + " | ".join(
            f"{_median(ratios[key]):>{width}}"
            for key, width in (("random", 10), ("grid", 8), ("random_n", 8), ("grid_n", 6))
        )
    )
    print(
        "TPE hit@ = trial at which TPE first reached its own best; X/TPE = trials X needed / TPE hit@; "
        "X/N = trials X needed / N; '>' = a lower bound (not reached within the budget). TPE's first 10 trials "
        "are random (Optuna's n_startup_trials=10), the same points RandomSampler draws with that seed."
    )
    print(
        f"Secondary view (a looser bar than the goal's), target = TPE best - {tolerance}: trials needed "
        + "; ".join(f"{sampler} {values}" for sampler, values in loose.items())
    )


def pruning_savings(data: Data, family: str, seeds: list[int], n: int, folds: int) -> None:
    print(
        f"\n## 2. Fold computations saved by pruning (N={n}, {folds}-fold CV, tune.pruner=median vs none, same "
        "seeds; median: stop when the running CV mean is below the median of complete trials at that fold, "
        "from fold 2 on, after 5 complete trials)"
    )
    header = (
        f"{'sampler':>7} | {'seed':>4} | {'folds pruned':>12} | {'folds nop':>9} | {'saved':>6} "
        f"| {'trials pruned':>13} | {'best pruned':>11} | {'best nop':>8} | {'delta':>8}"
    )
    print(header)
    print("-" * len(header))
    for sampler in ("tpe", "random"):
        totals = {"median": 0, "none": 0}
        deltas = []
        for seed in seeds:
            results = {}
            for pruner in totals:
                tune = TuneParams(
                    sampler=sampler,
                    n_trials=n,
                    cv_folds=folds,
                    pruner=pruner,
                    threads_per_trial=1,
                    spaces={family: SPACES[family]},
                )
                results[pruner] = study(data, family, tune, seed)
                totals[pruner] += results[pruner].folds_computed
            pruned, nop = results["median"], results["none"]
            deltas.append(pruned.best_score - nop.best_score)
            print(
                f"{sampler:>7} | {seed:>4} | {pruned.folds_computed:>12} | {nop.folds_computed:>9} "
                f"| {1 - pruned.folds_computed / nop.folds_computed:>6.1%} | {pruned.n_pruned:>13} "
                f"| {pruned.best_score:>11.5f} | {nop.best_score:>8.5f} | {deltas[-1]:>+8.5f}"
            )
        print(
            f"{sampler:>7} | {'all':>4} | {totals['median']:>12} | {totals['none']:>9} "
            f"| {1 - totals['median'] / totals['none']:>6.1%} | {'':>13} | {'':>11} | {'mean':>8} "
            f"| {statistics.mean(deltas):>+8.5f}"
        )
    print(
        f"A trial can be stopped only after its 2nd fold and before its last: at most {folds - 2} of {folds} folds "
        "of a pruned trial are saved. delta = best with pruning - best without. Random search samples the same "
        "points either way; TPE's later proposals depend on which trials were pruned."
    )


def parallel_speedup(data: Data, folds: int, repeats: int) -> None:
    print(
        f"\n## 3. Wall time, n_jobs=2 vs n_jobs=1 on the same grid of trials ({folds}-fold CV, no pruning, "
        f"best of {repeats})"
    )
    header = (
        f"{'family':<22} | {'trials':>6} | {'threads_per_trial':>20} | {'n_jobs=1 s':>10} | {'cores used':>10} "
        f"| {'n_jobs=2 s':>10} | {'cores used':>10} | {'speed-up':>8}"
    )
    print(header)
    print("-" * len(header))
    for family, space in PARALLEL_SPACES.items():
        for threads in (1, None):
            times, used, counts = {}, {}, {}
            for jobs in (1, 2):
                tune = TuneParams(
                    sampler="grid",
                    grid_points=4,
                    n_trials=100,
                    cv_folds=folds,
                    pruner="none",
                    n_jobs=jobs,
                    threads_per_trial=threads,
                    spaces={family: space},
                )
                times[jobs] = math.inf
                for _ in range(repeats):
                    cpu, started = _cpu_seconds(), time.perf_counter()
                    result = tune_family(
                        family, tune.spaces[family], *data, tune, 0, fixed=FIXED[family], progress_bar=False
                    )
                    wall = time.perf_counter() - started
                    if wall < times[jobs]:
                        times[jobs], used[jobs] = wall, (_cpu_seconds() - cpu) / wall
                counts[jobs] = result.n_trials
            trials = str(counts[1]) if counts[1] == counts[2] else f"{counts[1]}/{counts[2]}"
            label = "1 (default)" if threads == 1 else "null (cores/n_jobs)"
            print(
                f"{family:<22} | {trials:>6} | {label:>20} | {times[1]:>10.2f} | {used[1]:>10.2f} "
                f"| {times[2]:>10.2f} | {used[2]:>10.2f} | {times[1] / times[2]:>7.2f}x"
            )
    print(
        "Workers are Optuna threads in one process. 'cores used' = process CPU seconds / wall seconds: near 1 with "
        "n_jobs=2 means the workers did not run at once (GIL, or the other core busy with other work); spinning "
        "OpenMP threads also count as used. 'a/b' trials: the two workers both took some grid point."
    )


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _ratio(value: float, lower_bound: bool) -> str:
    if math.isinf(value):
        return "inf"
    return (">" if lower_bound else "") + f"{value:.2f}"


def _median(values: list[tuple[float, bool]]) -> str:
    """Median over seeds; '>' when a lower bound (a sampler out of budget) sits at or below the middle: its true
    value may lie above it, which can only raise the median."""
    ordered = sorted(values)
    middle = ordered[(len(ordered) - 1) // 2 : len(ordered) // 2 + 1]
    value = statistics.mean(v for v, _ in middle) if not any(math.isinf(v) for v, _ in middle) else math.inf
    lower_bound = any(bound for _, bound in ordered[: len(ordered) // 2 + 1])
    return _ratio(value, lower_bound)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--family", choices=sorted(SPACES), default=LR, help="family of sections 1-2")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per sampler (default 5)")
    parser.add_argument("--trials", type=int, default=30, help="N, TPE's trial budget (default 30)")
    parser.add_argument("--cap-factor", type=float, default=3.0, help="random/grid stop at this many times N")
    parser.add_argument("--grid-points", type=int, default=10, help="grid points per continuous range")
    parser.add_argument("--folds", type=int, default=3, help="CV folds for sections 1 and 3")
    parser.add_argument("--prune-folds", type=int, default=5, help="CV folds for section 2 (the stage default)")
    parser.add_argument("--rows", type=int, default=None, help="cap the train split at this many rows")
    parser.add_argument("--tolerance", type=float, default=0.001, help="AUC slack of the secondary view")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats in section 3 (best is kept)")
    parser.add_argument("--sections", default="1,2,3", help="which sections to run, e.g. 3 or 1,2")
    parser.add_argument("--quick", action="store_true", help="2 seeds, N=10, 1500 rows: a smoke run")
    args = parser.parse_args(argv)
    record = Recorder("tuning", argv)  # its figures are printed as measured (no goals): kept as printed
    if args.quick:
        args.seeds, args.trials, args.rows = 2, 10, args.rows or 1500
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    started = time.perf_counter()
    data, split_seed = load_train(args.params, args.rows)
    seeds = list(range(args.seeds))
    cap = round(args.cap_factor * args.trials)
    rows = f"capped at {args.rows} (sampled with seed {split_seed})" if args.rows else "all"
    print("# Optiflow tuning benchmark")
    print(f"data: train split of {args.params}: {len(data[0])} rows ({rows}), positives {data[1].mean():.1%}")
    print(
        f"sections 1-2: {args.family}, space {SPACES[args.family]}, fixed {FIXED[args.family]}, "
        "one native thread per trial (trial and fold counts do not depend on it)"
    )
    print(
        f"seeds {seeds}, N={args.trials}, cap {cap}; cores available {available_cores()}, load average at start "
        f"{os.getloadavg()[0]:.2f} (a machine shared with other work makes section 3's timings noisy)"
    )
    sections = set(args.sections.split(","))
    if "1" in sections:
        sampler_efficiency(data, args.family, seeds, args.trials, cap, args.grid_points, args.folds, args.tolerance)
    if "2" in sections:
        pruning_savings(data, args.family, seeds, args.trials, args.prune_folds)
    if "3" in sections:
        parallel_speedup(data, args.folds, args.repeats)
    print(f"\ntotal bench time {time.perf_counter() - started:.0f} s; load average at end {os.getloadavg()[0]:.2f}")
    record.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
