"""Tuning benchmark on the shipped data: sampler efficiency, fold computations saved by pruning, parallel speed-up.

Everything is measured in one run, side by side, on the same train split and search space, and printed as is:
  1. trials grid and random search need to reach the best CV ROC AUC that TPE reaches within N trials (>= 5 seeds);
  2. share of fold computations the median pruner saves (TPE, pruned vs NopPruner, same seeds), with both best scores;
  3. wall time of n_jobs=2 vs n_jobs=1 on the same grid of trials.

    python bench/tuning.py            # full: 5 seeds, N=30 (about 5 minutes on 2 idle cores)
    python bench/tuning.py --quick    # smoke run: 2 seeds, N=10, 1500 rows
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from typing import Any

import numpy as np
import pandas as pd

from optiflow.config import load_config
from optiflow.ingest import Schema, load_dataset, resolve_schema
from optiflow.split import labels, split_dataset
from optiflow.tuning import TuneParams, tune_family

LR, HGB = "logistic_regression", "hist_gradient_boosting"
# Cheap lbfgs models (no saga), so hundreds of trials fit in minutes; one continuous and two categorical axes.
SEARCH_SPACE = {
    "C": {"type": "float", "low": 1e-4, "high": 100.0, "log": True},
    "class_weight": {"type": "categorical", "choices": [None, "balanced"]},
    "fit_intercept": {"type": "categorical", "choices": [True, False]},
}
PARALLEL_SPACES = {
    LR: {"C": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
         "class_weight": {"type": "categorical", "choices": [None, "balanced"]}},
    HGB: {"learning_rate": {"type": "float", "low": 0.03, "high": 0.3, "log": True},
          "max_leaf_nodes": {"type": "int", "low": 8, "high": 31}},
}
PARALLEL_FIXED = {LR: {}, HGB: {"max_iter": 100}}


class Reached(Exception):
    """Raised from the trial callback to stop a study as soon as it matches the target score."""


def load_train(params_path: str, rows: int | None, seed: int) -> tuple[pd.DataFrame, np.ndarray, Schema]:
    config = load_config(params_path)
    params = config.params
    frame, _ = load_dataset(config.source, params.data)
    train = split_dataset(frame, params.data, params.split, params.seed).train
    if rows is not None and rows < len(train):
        train = train.sample(n=rows, random_state=seed).reset_index(drop=True)
    return train, labels(train, params.data), resolve_schema(train, params.data)


def trials_to_reach(data: tuple, tune: TuneParams, seed: int, target: float) -> int | None:
    """Run the study until a complete trial scores >= target; the trial count then, or None if the cap came first."""
    frame, y, schema = data
    seen: list[dict[str, Any]] = []

    def stop_when_reached(row: dict[str, Any]) -> None:
        seen.append(row)
        if row["state"] == "COMPLETE" and row["value"] >= target:
            raise Reached

    try:
        tune_family(LR, tune.spaces[LR], frame, y, schema, tune, seed, stop_when_reached, progress_bar=False)
    except Reached:
        return len(seen)
    return None


def first_hit(trials: tuple[dict[str, Any], ...], target: float) -> int:
    ordered = sorted(trials, key=lambda row: row["number"])
    return next(i + 1 for i, row in enumerate(ordered) if row["state"] == "COMPLETE" and row["value"] >= target)


def sampler_efficiency(data: tuple, seeds: list[int], n: int, cap: int, grid_points: int, folds: int,
                       tolerance: float) -> None:
    base = TuneParams(cv_folds=folds, pruner="none", grid_points=grid_points, spaces={LR: SEARCH_SPACE})
    grid_size = int(np.prod([grid_points if p["type"] != "categorical" else len(p["choices"])
                             for p in SEARCH_SPACE.values()]))
    print(f"\n## 1. Trials needed to reach TPE's best CV ROC AUC within N={n} (no pruning, {folds}-fold CV)")
    print(f"random is capped at {cap} trials; grid ({grid_points} points per range) has {grid_size} points, "
          f"so it stops at min({cap}, {grid_size})")
    header = (f"{'seed':>4} | {'TPE best':>8} | {'TPE hit@':>8} | {'random':>7} | {'grid':>7} "
              f"| {'random/TPE':>10} | {'grid/TPE':>8} | {'random/N':>8} | {'grid/N':>6}")
    ratios: dict[str, list[tuple[float, bool]]] = {"random": [], "grid": [], "random_n": [], "grid_n": []}
    loose: dict[str, list[int | None]] = {"random": [], "grid": []}
    lines = []
    for seed in seeds:
        started = time.perf_counter()
        frame, y, schema = data
        tpe = tune_family(LR, base.spaces[LR], frame, y, schema,
                          base.model_copy(update={"sampler": "tpe", "n_trials": n}), seed, progress_bar=False)
        hit = first_hit(tpe.trials, tpe.best_score)
        needed = {}
        for sampler, limit in (("random", cap), ("grid", min(cap, grid_size))):
            tune = base.model_copy(update={"sampler": sampler, "n_trials": limit})
            needed[sampler] = trials_to_reach(data, tune, seed, tpe.best_score)
            loose[sampler].append(trials_to_reach(data, tune, seed, tpe.best_score - tolerance))
        cells = []
        for sampler, limit in (("random", cap), ("grid", min(cap, grid_size))):
            count = needed[sampler]
            censored = count is None
            value = limit if censored else count
            ratios[sampler].append((value / hit, censored))
            ratios[f"{sampler}_n"].append((value / n, censored))
            cells.append(f">{limit}" if censored else str(count))
        mark = {key: (">" if values[-1][1] else "") for key, values in ratios.items()}
        lines.append(
            f"{seed:>4} | {tpe.best_score:>8.5f} | {hit:>8} | {cells[0]:>7} | {cells[1]:>7} "
            f"| {mark['random'] + format(ratios['random'][-1][0], '.2f'):>10} "
            f"| {mark['grid'] + format(ratios['grid'][-1][0], '.2f'):>8} "
            f"| {mark['random_n'] + format(ratios['random_n'][-1][0], '.2f'):>8} "
            f"| {mark['grid_n'] + format(ratios['grid_n'][-1][0], '.2f'):>6}"
        )
        logging.getLogger("bench").info("seed %d done in %.1f s", seed, time.perf_counter() - started)
    print(header)
    print("-" * len(header))
    print("\n".join(lines))
    summary = {key: _median(values) for key, values in ratios.items()}
    print(f"{'median':>4} | {'':>8} | {'':>8} | {'':>7} | {'':>7} | {summary['random']:>10} | {summary['grid']:>8} "
          f"| {summary['random_n']:>8} | {summary['grid_n']:>6}")
    print("TPE hit@ = trial at which TPE first reached its own best; X/TPE = trials X needed / TPE hit@; "
          "X/N = trials X needed / N. '>' marks a sampler that never reached the target (counted at its cap, "
          "so the ratio is a lower bound).")
    print(f"Secondary view, target = TPE best - {tolerance} (a looser bar than the goal's): "
          + ", ".join(f"{s} needed {[('>cap' if c is None else c) for c in loose[s]]}" for s in loose))


def pruning_savings(data: tuple, seeds: list[int], n: int, folds: int) -> None:
    frame, y, schema = data
    print(f"\n## 2. Fold computations saved by pruning (TPE, N={n}, {folds}-fold CV, MedianPruner(n_warmup_steps=1) "
          "vs NopPruner)")
    header = (f"{'seed':>4} | {'folds pruned':>12} | {'folds nop':>9} | {'saved':>6} | {'trials pruned':>13} "
              f"| {'best pruned':>11} | {'best nop':>8} | {'delta':>8}")
    print(header)
    print("-" * len(header))
    totals = {"median": 0, "none": 0}
    deltas = []
    for seed in seeds:
        results = {}
        for pruner in ("median", "none"):
            tune = TuneParams(sampler="tpe", n_trials=n, cv_folds=folds, pruner=pruner, spaces={LR: SEARCH_SPACE})
            results[pruner] = tune_family(LR, tune.spaces[LR], frame, y, schema, tune, seed, progress_bar=False)
            totals[pruner] += results[pruner].folds_computed
        pruned, nop = results["median"], results["none"]
        delta = pruned.best_score - nop.best_score
        deltas.append(delta)
        print(f"{seed:>4} | {pruned.folds_computed:>12} | {nop.folds_computed:>9} "
              f"| {1 - pruned.folds_computed / nop.folds_computed:>6.1%} | {pruned.n_pruned:>13} "
              f"| {pruned.best_score:>11.5f} | {nop.best_score:>8.5f} | {delta:>+8.5f}")
    print(f" all | {totals['median']:>12} | {totals['none']:>9} | {1 - totals['median'] / totals['none']:>6.1%} | "
          f"{'':>13} | {'':>11} | {'':>8} | {statistics.mean(deltas):>+8.5f} (mean)")
    print(f"Pruning can stop a trial only after fold 2 and before the last fold: at most {folds - 2} of {folds} "
          "folds of a pruned trial are saved. 'delta' = best score with pruning - without (same seed); pruning "
          "changes what TPE samples next, so the two searches are not trial-for-trial identical.")


def parallel_speedup(data: tuple, folds: int, repeats: int) -> None:
    frame, y, schema = data
    print(f"\n## 3. Wall time, n_jobs=2 vs n_jobs=1 on the same grid of trials ({folds}-fold CV, no pruning, "
          f"best of {repeats})")
    header = (f"{'family':<22} | {'trials':>6} | {'native threads':>14} | {'n_jobs=1 s':>10} | {'n_jobs=2 s':>10} "
              f"| {'speed-up':>8}")
    print(header)
    print("-" * len(header))
    from threadpoolctl import threadpool_limits

    for family, space in PARALLEL_SPACES.items():
        for threads in ("stage default", "1 per worker"):
            times, counts = {}, {}
            for jobs in (1, 2):
                tune = TuneParams(sampler="grid", grid_points=4, n_trials=100, cv_folds=folds, pruner="none",
                                  n_jobs=jobs, spaces={family: space})
                best = float("inf")
                for _ in range(repeats):
                    with threadpool_limits(limits=1 if threads == "1 per worker" else None):
                        started = time.perf_counter()
                        result = tune_family(family, tune.spaces[family], frame, y, schema, tune, 0,
                                             fixed=PARALLEL_FIXED[family], progress_bar=False)
                        best = min(best, time.perf_counter() - started)
                times[jobs], counts[jobs] = best, result.n_trials
            trials = str(counts[1]) if counts[1] == counts[2] else f"{counts[1]}/{counts[2]}"
            print(f"{family:<22} | {trials:>6} | {threads:>14} | {times[1]:>10.2f} | {times[2]:>10.2f} "
                  f"| {times[1] / times[2]:>7.2f}x")
    print("'stage default': n_jobs=1 leaves sklearn's native pools as they are (HGB's OpenMP uses every core); "
          "n_jobs=2 gives each worker cores/2 threads, as the tune stage does. '1 per worker': one native thread "
          "per fit in both runs (pure trial parallelism). Workers are Optuna threads in one process.")


def _median(values: list[tuple[float, bool]]) -> str:
    ordered = sorted(values, key=lambda item: item[0])
    middle = ordered[len(ordered) // 2] if len(ordered) % 2 else None
    if middle is None:
        low, high = ordered[len(ordered) // 2 - 1], ordered[len(ordered) // 2]
        value, censored = (low[0] + high[0]) / 2, low[1] or high[1]
    else:
        value, censored = middle
    return (">" if censored else "") + f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per sampler (default 5)")
    parser.add_argument("--trials", type=int, default=30, help="N, TPE's trial budget (default 30)")
    parser.add_argument("--cap-factor", type=float, default=3.0, help="random/grid stop at this many times N")
    parser.add_argument("--grid-points", type=int, default=10, help="grid points per continuous range")
    parser.add_argument("--folds", type=int, default=3, help="CV folds for sections 1 and 3")
    parser.add_argument("--prune-folds", type=int, default=5, help="CV folds for section 2 (the stage default)")
    parser.add_argument("--rows", type=int, default=None, help="cap the train split at this many rows")
    parser.add_argument("--tolerance", type=float, default=0.001, help="AUC slack of the secondary view")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats in section 3 (best is kept)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, N=10, 1500 rows: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.rows = 2, 10, args.rows or 1500
    for key, value in {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    started = time.perf_counter()
    config_seed = load_config(args.params).params.seed
    data = load_train(args.params, args.rows, config_seed)
    seeds = list(range(args.seeds))
    cap = round(args.cap_factor * args.trials)
    print("# Optiflow tuning benchmark")
    rows_note = f"capped at {args.rows} (sampled, seed {config_seed})" if args.rows else "all"
    print(f"data: train split of {args.params}: {len(data[0])} rows ({rows_note}), positives {data[1].mean():.1%}")
    print(f"space ({LR}): {SEARCH_SPACE}")
    print(f"seeds {seeds}, N={args.trials}, cap {cap}; cpu_count {os.cpu_count()}, load average at start "
          f"{os.getloadavg()[0]:.2f} (a shared machine makes the timings in section 3 noisy)")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # sections 1-2 count trials and folds, not seconds: keep them quick
        sampler_efficiency(data, seeds, args.trials, cap, args.grid_points, args.folds, args.tolerance)
        pruning_savings(data, seeds, args.trials, args.prune_folds)
    parallel_speedup(data, args.folds, args.repeats)
    print(f"\ntotal bench time {time.perf_counter() - started:.0f} s; load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
