"""Paired comparison of two models scored on the same rows: the difference of their ROC AUC with a confidence
interval, so a promotion rests on evidence larger than the noise of a few thousand rows.

DeLong, DeLong & Clarke-Pearson (1988) give the variance of the paired AUC difference from the placement values of
each positive and negative row; Sun & Xu (2014) compute them from midranks in O(n log n). The paired percentile
bootstrap (rows resampled together for both models) is the assumption-light cross-check.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

Method = Literal["delong", "bootstrap"]


@dataclass(frozen=True)
class PairedComparison:
    """Challenger minus baseline ROC AUC on the same rows, with a two-sided interval at ``confidence``."""

    method: Method
    rows: int
    positives: int
    baseline_auc: float
    challenger_auc: float
    estimate: float  # challenger_auc - baseline_auc
    low: float
    high: float
    confidence: float
    p_better: float  # one-sided p-value of "the challenger is not better"

    def describe(self) -> str:
        return (
            f"ROC AUC challenger {self.challenger_auc:.4f} - champion {self.baseline_auc:.4f} = {self.estimate:+.4f}, "
            f"{self.confidence:.0%} CI [{self.low:+.4f}, {self.high:+.4f}] ({_METHOD_NAMES[self.method]}, "
            f"{self.rows} rows, {self.positives} positive)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


_METHOD_NAMES = {"delong": "DeLong", "bootstrap": "paired bootstrap"}


def delong(y: np.ndarray, baseline: np.ndarray, challenger: np.ndarray, confidence: float = 0.95) -> PairedComparison:
    """DeLong's paired test by the fast midrank algorithm: both AUCs, the variance of their difference, the
    interval and the one-sided p-value."""
    positive = _labels(y, baseline, challenger)
    scores = np.vstack([np.asarray(baseline, dtype=float), np.asarray(challenger, dtype=float)])
    pos, neg = scores[:, positive], scores[:, ~positive]
    m, n = pos.shape[1], neg.shape[1]
    within_pos, within_neg = stats.rankdata(pos, axis=1), stats.rankdata(neg, axis=1)
    overall = stats.rankdata(np.hstack([pos, neg]), axis=1)
    auc = (overall[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    placements_pos = (overall[:, :m] - within_pos) / n  # share of negatives each positive outranks (ties half)
    placements_neg = 1.0 - (overall[:, m:] - within_neg) / m  # share of positives that outrank each negative
    cov_pos, cov_neg = np.cov(placements_pos), np.cov(placements_neg)
    variance = (cov_pos[0, 0] + cov_pos[1, 1] - 2 * cov_pos[0, 1]) / m
    variance += (cov_neg[0, 0] + cov_neg[1, 1] - 2 * cov_neg[0, 1]) / n
    estimate = float(auc[1] - auc[0])
    se = math.sqrt(max(float(variance), 0.0))
    z = stats.norm.ppf(0.5 + confidence / 2)
    # no variance: the models rank these rows identically (no evidence of a difference)
    p_better = float(stats.norm.sf(estimate / se)) if se > 0 else float(estimate <= 0)
    return PairedComparison(
        "delong", len(positive), m, float(auc[0]), float(auc[1]), estimate, estimate - z * se, estimate + z * se,
        confidence, p_better,
    )  # fmt: skip


def paired_bootstrap(
    y: np.ndarray,
    baseline: np.ndarray,
    challenger: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """The percentile interval of the AUC difference over ``resamples`` resamples of the rows, each resample shared
    by both models (resamples holding a single class are skipped)."""
    positive = _labels(y, baseline, challenger)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(positive), size=(resamples, len(positive)))
    labels = positive[rows]
    differences = _auc_by_row(labels, np.asarray(challenger, dtype=float)[rows])
    differences -= _auc_by_row(labels, np.asarray(baseline, dtype=float)[rows])
    differences = differences[np.isfinite(differences)]
    full = delong(positive, baseline, challenger, confidence)  # the point estimates, on every row
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1.0 - tail])
    return PairedComparison(
        "bootstrap", full.rows, full.positives, full.baseline_auc, full.challenger_auc, full.estimate, float(low),
        float(high), confidence, float(np.mean(differences <= 0.0)),
    )  # fmt: skip


def compare_auc(
    y: np.ndarray,
    baseline: np.ndarray,
    challenger: np.ndarray,
    method: Method = "delong",
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    if method == "delong":
        return delong(y, baseline, challenger, confidence)
    return paired_bootstrap(y, baseline, challenger, confidence, resamples, seed)


def _auc_by_row(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of a (resamples, rows) matrix from midranks; NaN where a row holds one class."""
    ranks = stats.rankdata(scores, axis=1)
    m = labels.sum(axis=1)
    n = labels.shape[1] - m
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((ranks * labels).sum(axis=1) - m * (m + 1) / 2) / (m * n)


def _labels(y: np.ndarray, baseline: np.ndarray, challenger: np.ndarray) -> np.ndarray:
    positive = np.asarray(y).astype(int) == 1
    if not (len(positive) == len(baseline) == len(challenger)):
        raise ValueError(f"lengths differ: y {len(positive)}, baseline {len(baseline)}, challenger {len(challenger)}")
    if positive.all() or not positive.any():
        raise ValueError("a paired AUC comparison needs both classes among the rows")
    return positive
