"""Calibration (reliability, expected calibration error, and the calibration itself), the decision threshold, and
metrics by slice.

The chosen model's probabilities are calibrated on the validation split with scikit-learn's
``CalibratedClassifierCV(FrozenEstimator(model))`` (the fitted model is never refit). Sigmoid or isotonic is chosen by
cross-fitting on the validation split: each method is fitted on some folds and judged on the fold it did not see,
so no method is judged on the rows it was fitted on. The threshold is chosen on the validation split too and applied
to the test split by the caller, so the test metrics stay an honest estimate. Figures are plain
``matplotlib.figure.Figure`` objects (Agg when saved as PNG): no pyplot state, nothing to close.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from optiflow.assess.groups import Bins, group_labels, per_group
from optiflow.config import EvaluateParams

log = logging.getLogger(__name__)

ThresholdPolicy = Literal["max_f1", "cost"]
# How far below the chosen score the cut goes: as wide as a served runtime may differ from the Python model
# (release/onnx.py's PARITY_TOLERANCE; a test holds this at least as wide), so no row holding the score flips.
THRESHOLD_MARGIN = 1e-5
Slice = str | tuple[str, ...]
SLICE_METRICS = ("count", "positive_rate", "selection_rate", "roc_auc", "f1", "accuracy")


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per equal-width bin: mean predicted probability, observed positive rate and count; empty bins are left out."""
    y, p = _check(y, p)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    frame = pd.DataFrame({"bin": index, "p": p, "y": y})
    table = frame.groupby("bin").agg(mean_predicted=("p", "mean"), observed_rate=("y", "mean"), count=("y", "size"))
    table = table.reset_index()
    table.insert(1, "lower", edges[table["bin"]])
    table.insert(2, "upper", edges[table["bin"] + 1])
    return table


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean gap between predicted probability and observed rate over equal-width bins."""
    table = reliability_table(y, p, bins)
    gaps = (table["mean_predicted"] - table["observed_rate"]).abs()
    return float((gaps * table["count"]).sum() / table["count"].sum())


CALIBRATION_METHODS = ("sigmoid", "isotonic")  # ties go to the first: sigmoid has two parameters, isotonic many


@dataclass(frozen=True, eq=False)
class CalibrationChoice:
    """The chosen method, the model calibrated with it on every calibration row, and the evidence for the choice."""

    method: str
    model: Any  # CalibratedClassifierCV(FrozenEstimator(model)): predict_proba returns calibrated probabilities
    brier: dict[str, float]  # out-of-fold Brier score per method (lower is better)
    folds: int
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "fitted_on": "valid",
            "rows": self.rows,
            "chosen_by": f"out-of-fold Brier score, {self.folds}-fold cross-fit on the valid split",
            "brier": self.brier,
        }


def calibrate(model: Any, X: pd.DataFrame, y: np.ndarray, method: str) -> Any:
    """``model`` (fitted, left untouched) with a ``method`` calibration map fitted on ``X``, ``y``."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    return CalibratedClassifierCV(FrozenEstimator(model), method=method).fit(X, np.asarray(y))


def choose_calibration(model: Any, X: pd.DataFrame, y: np.ndarray, folds: int, seed: int) -> CalibrationChoice:
    """Sigmoid or isotonic, whichever gives the lower Brier score on rows it was not fitted on (stratified folds of
    ``X``); the winner is then fitted on every row. Brier rather than log loss: isotonic maps can output exactly 0 or
    1, where log loss is infinite for one wrong row."""
    from sklearn.metrics import brier_score_loss
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y).astype(int)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    parts = list(splitter.split(X, y))
    brier = {}
    for method in CALIBRATION_METHODS:
        held_out = np.empty(len(y))
        for fit_rows, score_rows in parts:
            fitted = calibrate(model, X.iloc[fit_rows], y[fit_rows], method)
            held_out[score_rows] = fitted.predict_proba(X.iloc[score_rows])[:, 1]
        brier[method] = float(brier_score_loss(y, held_out))
    method = min(CALIBRATION_METHODS, key=lambda name: brier[name])
    log.info("calibration: %s (out-of-fold Brier %s on %d validation rows)", method, brier, len(y))
    return CalibrationChoice(method, calibrate(model, X, y, method), brier, folds, len(y))


def choose_threshold(
    y_valid: np.ndarray,
    p_valid: np.ndarray,
    policy: ThresholdPolicy = "max_f1",
    cost_fp: float = 1.0,
    cost_fn: float = 1.0,
) -> tuple[float, float]:
    """Threshold (predict positive when ``p >= threshold``) chosen on the validation split, and its value.

    ``max_f1`` returns the F1 reached; ``cost`` returns the mean cost per row ``(cost_fp * FP + cost_fn * FN) / n``
    (lower is better). Candidates are the distinct scores, so "predict nobody positive" is never chosen; ties go to
    the highest threshold (fewest positives). The cut returned sits just below the chosen score (``below_the_score``):
    the same rows are positive.
    """
    y, p = _check(y_valid, p_valid)
    if len(np.unique(y)) < 2:
        raise ValueError("choose_threshold needs both classes in the validation labels")
    if cost_fp < 0 or cost_fn < 0:
        raise ValueError(f"costs must be >= 0, got cost_fp={cost_fp}, cost_fn={cost_fn}")
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    # thresholds[0] is +inf (nobody positive); the rest are the distinct scores, highest first.
    tp, fp, thresholds = tpr[1:] * positives, fpr[1:] * negatives, thresholds[1:]
    fn = positives - tp
    if policy == "max_f1":
        values = 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12)
        best = int(np.argmax(values))
    elif policy == "cost":
        values = (cost_fp * fp + cost_fn * fn) / len(y)
        best = int(np.argmin(values))
    else:
        raise ValueError(f"unknown threshold policy {policy!r}; use 'max_f1' or 'cost'")
    below = float(thresholds[best + 1]) if best + 1 < len(thresholds) else 0.0
    threshold, value = below_the_score(float(thresholds[best]), below), float(values[best])
    log.info("threshold policy %s: threshold %.4f gives %.4f", policy, threshold, value)
    return threshold, value


def below_the_score(score: float, next_lower: float) -> float:
    """The cut that labels ``score`` positive and ``next_lower`` (the next lower distinct score) negative, placed
    ``THRESHOLD_MARGIN`` below ``score`` (at most half way down): a cut on the score itself leaves the rows holding it
    (the row that set it, an isotonic plateau) to flip with the last bits of another runtime's float arithmetic, and
    the ONNX graph then loses its parity check on the very rows that chose the cut."""
    return score - min(THRESHOLD_MARGIN, (score - next_lower) / 2)


def slice_metrics(
    frame: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    slice_columns: Sequence[Slice],
    bins: Bins | None = None,
) -> pd.DataFrame:
    """Metrics per value of each slice column (per bin of a column in ``bins``); a tuple of columns slices by their
    intersection.

    ROC AUC is NaN in a slice holding a single class (it is undefined there), never an error.
    """
    y, p = _check(y, p)
    if len(frame) != len(y):
        raise ValueError(f"frame has {len(frame)} rows but y has {len(y)}")
    predicted = (p >= threshold).astype(int)
    parts = []
    for spec in slice_columns:
        columns = (spec,) if isinstance(spec, str) else tuple(spec)
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise ValueError(f"slice column(s) {missing} not in the frame; present: {list(frame.columns)}")
        table = per_group(y, predicted, group_labels(frame, columns, bins), p)[list(SLICE_METRICS)]
        parts.append(table.rename_axis("value").reset_index().assign(slice=" & ".join(columns)))
    return pd.concat(parts, ignore_index=True)[["slice", "value", *SLICE_METRICS]]


def reliability_figure(tables: Mapping[str, pd.DataFrame], title: str = "Reliability (test split)") -> Figure:
    """Reliability curves (from ``reliability_table``; e.g. before and after calibration) against the diagonal."""
    figure = Figure(figsize=(5, 4.5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    for name, table in tables.items():
        axes.plot(table["mean_predicted"], table["observed_rate"], marker="o", label=name)
    axes.set(
        xlabel="mean predicted probability", ylabel="observed positive rate", xlim=(0, 1), ylim=(0, 1), title=title
    )
    axes.legend(loc="upper left")
    figure.tight_layout()
    return figure


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y), np.asarray(p, dtype=float)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y and p must be 1-D of equal length, got shapes {y.shape} and {p.shape}")
    if len(y) == 0:
        raise ValueError("no rows to evaluate")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must hold 0/1 labels (1 = positive)")
    y = y.astype(int)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p must hold probabilities in [0, 1] without NaN")
    return y, p


def decision_threshold(y_valid: np.ndarray, p_valid: np.ndarray, params: EvaluateParams) -> float:
    """The policy's threshold, chosen on the validation split so that test metrics stay an honest estimate."""
    if params.threshold_policy == "fixed":
        return params.threshold
    threshold, _ = choose_threshold(y_valid, p_valid, params.threshold_policy, params.cost_fp, params.cost_fn)
    return threshold
