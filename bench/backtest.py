"""Goals of the backtest issue, measured in one run (no Prefect): the estimator's error and band coverage on
covariate- and prior-shift batches, the share of concept-shift batches diagnosed as such once labelled, the policy
comparison (estimated-performance against drift-share) and the wall time of the grid.

    PYTHONPATH=$PWD .venv/bin/python bench/backtest.py [--batches 60 --shift-at 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from optiflow.config import BacktestParams
from optiflow.config.loading import load_config
from optiflow.monitoring.backtest import run_backtest

COVARIATE_OR_PRIOR = ("sudden_covariate", "gradual_covariate", "seasonal", "prior")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--shift-at", type=int, default=20)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--label-delay", type=int, default=3)
    args = parser.parse_args()
    settings = BacktestParams(
        batches=args.batches, shift_at=args.shift_at, batch_rows=args.batch_rows, label_delay=args.label_delay
    )
    started = time.perf_counter()
    table, timeline = run_backtest(load_config(Path(args.params)), settings)
    wall = time.perf_counter() - started

    never = timeline[(timeline["policy"] == "never") & timeline["changed"]]
    shifted = never[never["scenario"].isin(COVARIATE_OR_PRIOR)]
    error = (shifted["estimated_roc_auc"] - shifted["realised_roc_auc"]).abs()
    covered = shifted["realised_roc_auc"].between(shifted["estimated_low"], shifted["estimated_high"])
    concept = never[never["scenario"] == "concept"]
    print(f"grid: {args.batches} batches x {len(settings.policies)} policies x {len(settings.scenarios)} scenarios")
    print(f"estimator on {len(shifted)} covariate/prior batches: MAE {error.mean():.4f} (goal <= 0.02), "
          f"95% band covers realised {covered.mean():.1%} (goal >= 90%)")  # fmt: skip
    for scenario, part in shifted.groupby("scenario"):
        part_error = (part["estimated_roc_auc"] - part["realised_roc_auc"]).abs().mean()
        part_cover = part["realised_roc_auc"].between(part["estimated_low"], part["estimated_high"]).mean()
        print(f"  {scenario:<18} MAE {part_error:.4f} coverage {part_cover:.1%}")
    print(
        f"concept batches diagnosed concept once labelled: {(concept['shift'] == 'concept').mean():.1%} (goal >= 90%)"
    )
    after = timeline[(timeline["scenario"] == "concept") & timeline["changed"]].groupby("policy")["realised_roc_auc"]
    print(f"concept, the {after.size().iloc[0]} batches after the change: mean realised ROC AUC "
          + ", ".join(f"{policy} {value:.3f}" for policy, value in after.mean().items()))  # fmt: skip
    by_policy = table.groupby("policy").agg(mean_roc_auc=("mean_roc_auc", "mean"), retrains=("retrains", "sum"))
    print(table.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    estimated, drift = by_policy.loc["estimated_performance"], by_policy.loc["drift_share"]
    control = table[(table["scenario"] == "control") & (table["policy"] == "estimated_performance")]["retrains"]
    print(f"estimated-performance: mean AUC {estimated['mean_roc_auc']:.4f} vs drift-share "
          f"{drift['mean_roc_auc']:.4f} (goal >=); retrains {int(estimated['retrains'])} vs {int(drift['retrains'])} "
          f"(goal <= half); control retrains {int(control.sum())} (goal 0)")  # fmt: skip
    print(f"wall time {wall:.0f} s (goal < 900 s for 60 x 5 x 7 on 2 cores)")


if __name__ == "__main__":
    main()
