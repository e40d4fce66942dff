"""The champion's performance on a batch: estimated from its calibrated scores before the labels arrive, realised
once they do, beside the same figures on the champion's reference chunk (holdout rows it never learnt from).

`assess_performance` is what the monitoring flow stores per batch; `performance_impact` reads from it the drop the
retraining decision weighs: the realised drop when the batch's labels are in, the estimated one before, each with
its standard error so that a drop inside the noise triggers nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import norm

from optiflow.monitoring.estimate import (
    CalibrationCheck,
    Estimate,
    calibration_check,
    estimate_performance,
    realised_metrics,
)

IMPACT_METRIC = "roc_auc"  # the metric the decision weighs (the one the champion was promoted on)


@dataclass(frozen=True)
class PerformanceCheck:
    """Estimated metrics of the batch and of the reference chunk (each with its band), the reference's realised
    metrics, whether calibration still holds on the reference (and on the batch once labelled), and the batch's
    realised metrics when its labels are in."""

    estimated: Estimate
    reference: Estimate
    reference_realised: dict[str, float]
    reference_calibration: CalibrationCheck
    realised: dict[str, float] | None = None
    batch_calibration: CalibrationCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimated": self.estimated.to_dict(),
            "reference": self.reference.to_dict(),
            "reference_realised": self.reference_realised,
            "reference_calibration": asdict(self.reference_calibration),
            "realised": self.realised,
            "batch_calibration": None if self.batch_calibration is None else asdict(self.batch_calibration),
        }


def assess_performance(
    reference_scores: np.ndarray,
    reference_labels: np.ndarray,
    batch_scores: np.ndarray,
    threshold: float,
    *,
    batch_labels: np.ndarray | None = None,
    labelled_scores: np.ndarray | None = None,
    level: float = 0.95,
    draws: int = 400,
    seed: int = 0,
) -> PerformanceCheck:
    """Estimate the batch and the reference chunk alike (their difference is the estimated drop, the estimator's
    own bias cancelling), check calibration on the reference, and add realised figures when labels are given:
    ``batch_labels`` of the rows scored ``labelled_scores`` (default: the batch's scores; pass the scores of the
    rows the champion never learnt from when the labels are theirs)."""
    labelled_scores = batch_scores if labelled_scores is None else labelled_scores
    labelled = batch_labels is not None and len(batch_labels) == len(labelled_scores) and len(batch_labels) > 0
    return PerformanceCheck(
        estimated=estimate_performance(batch_scores, threshold, level=level, draws=draws, seed=seed),
        reference=estimate_performance(reference_scores, threshold, level=level, draws=draws, seed=seed),
        reference_realised=realised_metrics(reference_labels, reference_scores, threshold),
        reference_calibration=calibration_check(reference_labels, reference_scores),
        realised=realised_metrics(batch_labels, labelled_scores, threshold) if labelled else None,
        batch_calibration=calibration_check(batch_labels, labelled_scores) if labelled else None,
    )


@dataclass(frozen=True)
class Impact:
    """How far the metric fell on the batch against the reference, and whether that is more than noise."""

    metric: str
    source: Literal["estimated", "realised"]
    baseline: float  # the metric on the reference chunk
    value: float  # estimated or realised on the batch
    standard_error: float  # of the drop: the batch's and the reference's sampling errors together
    z: float  # how many standard errors a drop must exceed to count

    @property
    def drop(self) -> float:
        return self.baseline - self.value

    @property
    def significant(self) -> bool:
        return bool(np.isfinite(self.drop) and self.drop > self.z * self.standard_error)

    def describe(self) -> str:
        return (
            f"{self.source} {self.metric} {self.value:.3f} vs {self.baseline:.3f} on the reference: drop "
            f"{self.drop:+.3f} (standard error {self.standard_error:.3f}, counts above {self.z:g} x)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop, "significant": self.significant}


def band_standard_error(band: Mapping[str, float], level: float) -> float:
    """A band's width in standard errors of a normal approximation."""
    return float((band["high"] - band["low"]) / (2.0 * norm.ppf(0.5 + level / 2.0)))


def performance_impact(performance: Mapping[str, Any], z: float, metric: str = IMPACT_METRIC) -> Impact:
    """The drop the decision weighs, read from a stored `PerformanceCheck.to_dict()`: realised when the batch's
    labels are in (against the reference's realised figure), estimated otherwise (against the reference's
    estimate). The standard error is the batch's (from its band: a batch this size) and the reference's, combined."""
    estimated, reference = performance["estimated"], performance["reference"]
    level = float(estimated["level"])
    batch_se = band_standard_error(estimated[metric], level)
    reference_se = band_standard_error(reference[metric], level)
    standard_error = float(np.hypot(batch_se, reference_se))
    realised = performance.get("realised")
    if realised is not None and np.isfinite(realised.get(metric, np.nan)):
        baseline = float(performance["reference_realised"][metric])
        return Impact(metric, "realised", baseline, float(realised[metric]), standard_error, z)
    return Impact(
        metric,
        "estimated",
        float(reference[metric]["estimate"]),
        float(estimated[metric]["estimate"]),
        standard_error,
        z,
    )
