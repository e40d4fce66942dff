"""Decision-quality benchmark on the shipped data: can each automatic decision be trusted? Measured in one run over
many resamples of the default table and printed (never asserted in tests):

  (a) A/A      challenger and champion trained the same way, different seeds: the share the paired rule promotes
               (goal <= 5%), beside the old rule (challenger ROC AUC >= champion's + 0.001 on the same rows);
  (b) real     the champion lacks two strong features (tenure, total_charges), the challenger has them: the share
               each rule promotes, and the true improvement measured on fresh rows;
  (c) optimism the mean gap between the reported test ROC AUC of the selected model and its ROC AUC on fresh rows
               never used for anything, when the family is chosen on the test split (old) or on valid (new)
               (goal for the new selection: within +-0.005);
  (d) calibration  the expected calibration error of the selected model on fresh rows, before and after the
               calibration chosen on valid.

Each resample shuffles the deduplicated table and cuts it with params.yaml's split shares (train, valid, test,
holdout; the pool's share is the fresh rows), then runs the decisions as the pipeline does: thresholds and the
family chosen on valid, calibration chosen by cross-fitting on valid (optiflow.assess.calibration), the champion
comparison by DeLong on the holdout with params.yaml's gates.champion (optiflow.assess.paired). To stay cheap
(about 4 s per resample on one core), it uses no Optuna and small fast families with fixed hyperparameters: two
logistic regressions and two gradient-boosting models as the candidates, and gradient boosting with early
stopping and feature subsampling (seed-dependent) for the champion/challenger pairs. Every tenth resample also
runs the paired bootstrap as a cross-check of DeLong's decision.

    python bench/decisions.py                   # 200 resamples (about 13 minutes on one core)
    python bench/decisions.py --resamples 20    # smoke run
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before sklearn loads OpenMP: one core per fit

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optiflow.assess.calibration import choose_calibration, expected_calibration_error
from optiflow.assess.paired import delong, paired_bootstrap
from optiflow.config import Params, load_config
from optiflow.data.ingest import load_dataset
from optiflow.data.keys import role_shares, unique_keys, with_keys
from optiflow.data.schema import Schema, resolve_schema
from optiflow.data.split import labels
from optiflow.modeling.families import build_pipeline

REPO = Path(__file__).resolve().parents[1]
OLD_MIN_DELTA = 0.001  # the rule this issue replaced: challenger AUC >= champion AUC + 0.001
WITHHELD = ("tenure", "total_charges")  # the champion of (b) never sees these
CANDIDATES = {  # (c) and (d): fixed hyperparameters, no tuning
    "lr_c1": ("logistic_regression", {"C": 1.0}),
    "lr_c0.05": ("logistic_regression", {"C": 0.05}),
    "hgb_small": ("hist_gradient_boosting", {"learning_rate": 0.05, "max_iter": 150, "max_leaf_nodes": 8}),
    "hgb_large": ("hist_gradient_boosting", {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31}),
}
PAIR_FAMILY = "hist_gradient_boosting"
PAIR = {  # (a) and (b): seeds change the early-stopping split and the feature subsample
    "learning_rate": 0.1,
    "max_iter": 200,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 40,
    "early_stopping": True,
    "validation_fraction": 0.1,
    "n_iter_no_change": 10,
    "max_features": 0.8,
}


@dataclass
class Parts:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    holdout: pd.DataFrame
    fresh: pd.DataFrame


def resample(frame: pd.DataFrame, params: Params, seed: int) -> Parts:
    """The table shuffled and cut with the split shares (the pool's share is the fresh rows)."""
    shares = role_shares(params.split)
    order = np.random.default_rng(seed).permutation(len(frame))
    shares = [shares[role] for role in ("train", "valid", "test", "holdout", "pool")]
    edges = np.cumsum([0, *(round(share * len(frame)) for share in shares)])
    edges[-1] = len(frame)
    return Parts(*(frame.iloc[order[a:b]].reset_index(drop=True) for a, b in itertools.pairwise(edges)))


def without(schema: Schema, columns: tuple[str, ...]) -> Schema:
    return Schema(
        tuple(c for c in schema.numeric if c not in columns), tuple(c for c in schema.categorical if c not in columns)
    )


def fit_calibrated(family: str, hyper: dict, schema: Schema, parts: Parts, params: Params, seed: int):
    model = build_pipeline(family, hyper, schema, seed).fit(parts.train, labels(parts.train, params.data))
    y_valid = labels(parts.valid, params.data)
    return model, choose_calibration(model, parts.valid, y_valid, params.evaluate.calibration_folds, seed)


def one_resample(frame: pd.DataFrame, schema: Schema, params: Params, seed: int, cross_check: bool) -> dict:
    parts = resample(frame, params, seed)
    y = {name: labels(getattr(parts, name), params.data) for name in ("valid", "test", "holdout", "fresh")}
    champion_rule = params.gates.champion
    row: dict[str, float] = {}

    # (a) A/A and (b) a real improvement: the calibrated models, as they would be registered, on the holdout
    _, aa_champion = fit_calibrated(PAIR_FAMILY, PAIR, schema, parts, params, 2 * seed)
    aa_challenger_raw, aa_challenger = fit_calibrated(PAIR_FAMILY, PAIR, schema, parts, params, 2 * seed + 1)
    _, weaker = fit_calibrated(PAIR_FAMILY, PAIR, without(schema, WITHHELD), parts, params, 2 * seed)
    scores = {
        name: model.model.predict_proba(parts.holdout)[:, 1]
        for name, model in (("champion", aa_champion), ("challenger", aa_challenger), ("weaker", weaker))
    }
    for case, baseline in (("aa", "champion"), ("real", "weaker")):
        compared = delong(y["holdout"], scores[baseline], scores["challenger"], champion_rule.confidence)
        row[f"{case}_new"] = compared.low > 0.0
        row[f"{case}_noninferior"] = compared.low > -champion_rule.margin
        row[f"{case}_old"] = compared.estimate >= OLD_MIN_DELTA
        row[f"{case}_estimate"] = compared.estimate
        if cross_check:
            boot = paired_bootstrap(
                y["holdout"], scores[baseline], scores["challenger"], champion_rule.confidence, champion_rule.resamples,
                seed,
            )  # fmt: skip
            row[f"{case}_bootstrap_agrees"] = (boot.low > 0.0) == (compared.low > 0.0)
    bins = params.evaluate.calibration_bins
    row["pair_ece_before"] = expected_calibration_error(
        y["fresh"], aa_challenger_raw.predict_proba(parts.fresh)[:, 1], bins
    )
    fresh_challenger = aa_challenger.model.predict_proba(parts.fresh)[:, 1]
    row["pair_ece_after"] = expected_calibration_error(y["fresh"], fresh_challenger, bins)
    row["real_true_gain"] = roc_auc_score(y["fresh"], fresh_challenger) - roc_auc_score(
        y["fresh"], weaker.model.predict_proba(parts.fresh)[:, 1]
    )

    # (c) optimism of the reported test AUC, old selection (on test) against new (on valid); (d) calibration
    fitted = {
        name: build_pipeline(family, hyper, schema, seed).fit(parts.train, labels(parts.train, params.data))
        for name, (family, hyper) in CANDIDATES.items()
    }
    auc = {
        split: {
            name: roc_auc_score(y[split], m.predict_proba(getattr(parts, split))[:, 1]) for name, m in fitted.items()
        }
        for split in ("valid", "test", "fresh")
    }
    old = max(fitted, key=lambda name: (auc["test"][name], name))
    row["old_gap"] = auc["test"][old] - auc["fresh"][old]
    new = max(fitted, key=lambda name: (auc["valid"][name], name))
    calibration = choose_calibration(fitted[new], parts.valid, y["valid"], params.evaluate.calibration_folds, seed)
    final_test = calibration.model.predict_proba(parts.test)[:, 1]
    final_fresh = calibration.model.predict_proba(parts.fresh)[:, 1]
    row["new_test_auc"] = roc_auc_score(y["test"], final_test)
    row["new_gap"] = row["new_test_auc"] - roc_auc_score(y["fresh"], final_fresh)
    row["ece_before"] = expected_calibration_error(y["fresh"], fitted[new].predict_proba(parts.fresh)[:, 1], bins)
    row["ece_after"] = expected_calibration_error(y["fresh"], final_fresh, bins)
    # what binning noise alone gives: labels drawn from the calibrated probabilities themselves
    drawn = (np.random.default_rng(seed).uniform(size=len(final_fresh)) < final_fresh).astype(int)
    row["ece_floor"] = expected_calibration_error(drawn, final_fresh, bins)
    row["isotonic"] = calibration.method == "isotonic"
    row["selected_" + new] = 1.0
    return row


def _mean_se(values: pd.Series) -> str:
    values = values.astype(float)
    return f"{values.mean():+.4f} +- {values.std(ddof=1) / math.sqrt(len(values)):.4f}"


def _rate(values: pd.Series) -> str:
    values = values.astype(float)
    share = values.mean()
    return f"{share:6.1%} ({int(values.sum())}/{len(values)}, +- {math.sqrt(share * (1 - share) / len(values)):.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resamples", type=int, default=200)
    args = parser.parse_args()
    config = load_config(REPO / "params.yaml")
    params = config.params
    raw, _ = load_dataset(config.source, params.data)
    frame, duplicates = unique_keys(with_keys(raw, params.data))
    schema = resolve_schema(raw, params.data)
    started = time.perf_counter()
    rows = []
    with threadpool_limits(limits=1):
        for seed in range(args.resamples):
            rows.append(one_resample(frame, schema, params, seed, cross_check=seed % 10 == 0))
            if (seed + 1) % 20 == 0:
                print(f"  {seed + 1}/{args.resamples} resamples, {time.perf_counter() - started:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    rule = params.gates.champion
    sizes = resample(frame, params, 0)
    print(
        f"\nDecision quality over {args.resamples} resamples of {config.source.name} ({len(frame)} rows after dropping"
        f" {duplicates} duplicate keys): train {len(sizes.train)}, valid {len(sizes.valid)}, test {len(sizes.test)},"
        f" holdout {len(sizes.holdout)}, fresh {len(sizes.fresh)} rows; {time.perf_counter() - started:.0f} s\n"
        f"Paired rule: DeLong {rule.confidence:.0%} interval of (challenger - champion) ROC AUC on the holdout,"
        f" lower bound > 0 (superiority on, as shipped); non-inferiority alone: lower bound > -{rule.margin:g}\n"
    )
    print("(a) A/A, same training, other seed: share promoted (goal <= 5%)")
    print(f"    new paired rule              {_rate(table['aa_new'])}")
    print(f"    old rule (+{OLD_MIN_DELTA:g} AUC)         {_rate(table['aa_old'])}")
    print(f"    non-inferiority alone        {_rate(table['aa_noninferior'])}")
    print(f"    AUC difference on holdout    {_mean_se(table['aa_estimate'])}")
    print(f"(b) real improvement (champion without {', '.join(WITHHELD)}): share promoted")
    print(f"    true gain on fresh rows      {_mean_se(table['real_true_gain'])}")
    print(f"    new paired rule              {_rate(table['real_new'])}")
    print(f"    old rule (+{OLD_MIN_DELTA:g} AUC)         {_rate(table['real_old'])}")
    print(f"    non-inferiority alone        {_rate(table['real_noninferior'])}")
    checks = table[[c for c in table.columns if c.endswith("_bootstrap_agrees")]].dropna()
    agree = checks.to_numpy(dtype=float)
    print(
        f"    DeLong and paired bootstrap ({rule.resamples} resamples) agree on {agree.mean():.0%} of {agree.size}"
        " decisions"
    )
    print("(c) optimism: reported test ROC AUC minus ROC AUC on fresh rows, mean +- SE (goal within +-0.005)")
    print(f"    old: family chosen on test   {_mean_se(table['old_gap'])}")
    print(f"    new: family chosen on valid  {_mean_se(table['new_gap'])}")
    chosen = {
        c.removeprefix("selected_"): table[c].fillna(0).mean() for c in table.columns if c.startswith("selected_")
    }
    print("    families chosen on valid     " + ", ".join(f"{k} {v:.0%}" for k, v in sorted(chosen.items())))
    print(f"    reported test ROC AUC (new)  {table['new_test_auc'].mean():.4f} (mean)")
    print(f"(d) expected calibration error on fresh rows ({params.evaluate.calibration_bins} bins), mean +- SE")
    print(f"    selected model, before       {_mean_se(table['ece_before'])}")
    print(f"    selected model, after        {_mean_se(table['ece_after'])}")
    print(f"    isotonic chosen              {table['isotonic'].astype(float).mean():.0%} (else sigmoid)")
    print(f"    noise floor (labels drawn from the calibrated probabilities) {_mean_se(table['ece_floor'])}")
    print(f"    boosting pair model, before  {_mean_se(table['pair_ece_before'])}")
    print(f"    boosting pair model, after   {_mean_se(table['pair_ece_after'])}")


if __name__ == "__main__":
    main()
