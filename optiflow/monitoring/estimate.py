"""How well the model does on a batch before its labels arrive: confidence-based performance estimation.

With calibrated probabilities, each score is the chance that its row is positive. The expected confusion matrix at
the served threshold, the expected ROC curve and the expected positive rate follow from the scores alone (the idea
of NannyML's CBPE, written here on numpy). The band is what the realised metric would look like if the labels were
drawn from those probabilities: labels are simulated (seeded) and the metric computed on each draw, so the band
widens for small batches and for batches whose scores sit near the threshold. All of it holds only while the
probabilities stay calibrated: `calibration_check` says, on labelled rows, whether they still are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

METRICS = ("roc_auc", "accuracy", "f1", "positive_rate")


@dataclass(frozen=True)
class Band:
    """A metric's estimate and the central ``level`` interval of its realised value on a batch this size."""

    estimate: float
    low: float
    high: float

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Estimate:
    """Estimated metrics of one batch, each with its band; ``rows`` scored, ``level`` of the bands."""

    rows: int
    threshold: float
    level: float
    metrics: dict[str, Band]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "threshold": self.threshold,
            "level": self.level,
            **{name: asdict(band) for name, band in self.metrics.items()},
        }


def expected_metrics(
    probabilities: np.ndarray, threshold: float, ranking: np.ndarray | None = None
) -> dict[str, float]:
    """Expected ROC AUC, accuracy, F1 at ``threshold`` and positive rate when each row is positive with its
    probability. ``ranking`` (default: the probabilities) orders the rows for the ROC curve: pass the raw scores when
    calibration flattened them into ties (isotonic steps)."""
    p = _probabilities(probabilities)
    flagged = p >= threshold
    true_positive, false_positive = p[flagged].sum(), (1.0 - p[flagged]).sum()
    false_negative, true_negative = p[~flagged].sum(), (1.0 - p[~flagged]).sum()
    f1_denominator = 2.0 * true_positive + false_positive + false_negative
    return {
        "roc_auc": _expected_auc(p, p if ranking is None else np.asarray(ranking, dtype=float)),
        "accuracy": float((true_positive + true_negative) / len(p)),
        "f1": float(2.0 * true_positive / f1_denominator) if f1_denominator > 0 else 0.0,
        "positive_rate": float(p.mean()),
    }


def realised_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    """The same metrics from the labels, once they arrive (ROC AUC is NaN for a batch holding one class)."""
    y = np.asarray(labels, dtype=int)
    p = _probabilities(probabilities)
    return {name: float(values[0]) for name, values in _metrics_of_draws(y[None, :], p, p, threshold).items()}


def estimate_performance(
    probabilities: np.ndarray,
    threshold: float,
    *,
    ranking: np.ndarray | None = None,
    level: float = 0.95,
    draws: int = 400,
    seed: int = 0,
) -> Estimate:
    """Each metric's expected value and the ``level`` band of its realised value, from ``draws`` label draws."""
    p = _probabilities(probabilities)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie between 0 and 1, got {level}")
    expected = expected_metrics(p, threshold, ranking)
    simulated = np.random.default_rng(seed).random((draws, len(p))) < p
    samples = _metrics_of_draws(simulated.astype(int), p, p if ranking is None else np.asarray(ranking), threshold)
    tail = (1.0 - level) / 2.0
    bands = {}
    for name in METRICS:
        values = samples[name][np.isfinite(samples[name])]
        # the outer order statistics: accuracy, F1 and the positive rate move in steps of one row
        low, high = (
            (np.quantile(values, tail, method="lower"), np.quantile(values, 1.0 - tail, method="higher"))
            if len(values)
            else (np.nan, np.nan)
        )
        bands[name] = Band(expected[name], float(min(low, expected[name])), float(max(high, expected[name])))
    return Estimate(len(p), float(threshold), level, bands)


@dataclass(frozen=True)
class CalibrationCheck:
    """Whether labelled rows still look calibrated: the observed positive count per score bin against the count
    the probabilities expect, each bin within its binomial band (a Hosmer-Lemeshow-style check, read bin by bin)."""

    rows: int
    ece: float  # expected calibration error over the bins (count-weighted |mean p - observed rate|)
    holds: bool
    worst_bin: str | None  # the bin furthest outside its band, e.g. "[0.6, 0.8): expected 41.2, observed 58"
    bins: list[dict[str, float]]


def calibration_check(labels: np.ndarray, probabilities: np.ndarray, bins: int = 5, z: float = 3.0) -> CalibrationCheck:
    """Equal-count bins of the probabilities; calibration holds when every bin's observed positives lie within
    ``z`` binomial standard deviations of the expected count (3 by default: with 5 bins a calibrated model almost
    never fails it by chance)."""
    y = np.asarray(labels, dtype=int)
    p = _probabilities(probabilities)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} probabilities")
    order = np.argsort(p, kind="stable")
    table, worst, worst_gap = [], None, 0.0
    for part in np.array_split(order, min(bins, len(p))):
        if not len(part):
            continue
        expected, observed = p[part].sum(), y[part].sum()
        spread = np.sqrt(max((p[part] * (1.0 - p[part])).sum(), 1e-12))
        gap = abs(observed - expected) / spread
        low, high = float(p[part].min()), float(p[part].max())
        table.append(
            {"low": low, "high": high, "rows": len(part), "expected": float(expected), "observed": int(observed)}
        )
        if gap > worst_gap:
            worst_gap = gap
            worst = f"[{low:.2f}, {high:.2f}]: expected {expected:.1f} positives, observed {int(observed)}"
    ece = float(sum(abs(row["expected"] - row["observed"]) for row in table) / len(p))
    holds = worst_gap <= z
    return CalibrationCheck(len(p), ece, holds, None if holds else worst, table)


def _expected_auc(p: np.ndarray, ranking: np.ndarray) -> float:
    """Area under the expected ROC curve: rows in descending ``ranking``, expected true and false positives
    accumulated (ties in the ranking advance together, as for a realised ROC curve)."""
    order = np.argsort(-ranking, kind="stable")
    p, ranking = p[order], ranking[order]
    ends = np.r_[np.flatnonzero(np.diff(ranking)), len(p) - 1]  # last row of each group of tied scores
    tps, fps = np.cumsum(p)[ends], np.cumsum(1.0 - p)[ends]
    if tps[-1] <= 0 or fps[-1] <= 0:
        return float("nan")
    tpr, fpr = np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]
    return float(np.trapezoid(tpr, fpr))


def _metrics_of_draws(
    labels: np.ndarray, p: np.ndarray, ranking: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Realised metrics of each row of ``labels`` (draws x rows) for one fixed set of scores, vectorised: labels are
    decided on the probabilities ``p`` at ``threshold``, rows ranked by ``ranking`` for ROC AUC."""
    from scipy.stats import rankdata

    flagged = p >= threshold
    positives = labels.sum(axis=1).astype(float)
    negatives = labels.shape[1] - positives
    ranks = rankdata(ranking)  # midranks: ties count one half, as in the Mann-Whitney statistic
    auc = ((labels * ranks).sum(axis=1) - positives * (positives + 1) / 2.0) / np.where(
        positives * negatives > 0, positives * negatives, np.nan
    )
    true_positive = (labels * flagged).sum(axis=1)
    false_positive = flagged.sum() - true_positive
    false_negative = positives - true_positive
    correct = true_positive + (negatives - false_positive)
    f1_denominator = 2.0 * true_positive + false_positive + false_negative
    return {
        "roc_auc": auc,
        "accuracy": correct / labels.shape[1],
        "f1": np.where(f1_denominator > 0, 2.0 * true_positive / np.maximum(f1_denominator, 1e-12), 0.0),
        "positive_rate": positives / labels.shape[1],
    }


def _probabilities(values: np.ndarray) -> np.ndarray:
    p = np.asarray(values, dtype=float)
    if p.ndim != 1 or not len(p):
        raise ValueError(f"expected a non-empty 1-D array of probabilities, got shape {p.shape}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0, 1] without NaN")
    return p
