"""Which kind of change a batch shows, with the evidence: a pure function of the figures monitoring stored for it.

- upstream break: a column's scale or set of values jumped (optiflow.monitoring.quarantine found reasons);
- concept shift: the realised ROC AUC fell below the estimate by more than the estimate's band allows, so P(y|x)
  changed and only new labels can fix the model (needs labels);
- prior shift: the realised positive rate left the rate the calibrated scores expect while the ranking held
  (needs labels);
- covariate shift: features or scores moved, and (once labelled) the estimate tracks the realised figures;
- none: nothing moved beyond its noise.

Before labels arrive a moved batch can only be called covariate: prior and concept shift are told apart once the
labels are in, and the evidence says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from optiflow.monitoring.performance import band_standard_error

Shift = Literal["upstream_break", "concept", "prior", "covariate", "none"]
SHIFTS: tuple[Shift, ...] = ("upstream_break", "concept", "prior", "covariate", "none")


@dataclass(frozen=True)
class Diagnosis:
    shift: Shift
    evidence: tuple[str, ...]
    figures: dict[str, float | None] = field(default_factory=dict)
    labelled: bool = False  # whether realised figures entered the diagnosis

    def to_dict(self) -> dict[str, Any]:
        return {
            "shift": self.shift,
            "evidence": list(self.evidence),
            "figures": self.figures,
            "labelled": self.labelled,
        }


def diagnose(
    performance: Mapping[str, Any],
    *,
    drifted_columns: Sequence[str] = (),
    prediction_drifted: bool = False,
    upstream_breaks: Sequence[str] = (),
    z: float = 2.0,
) -> Diagnosis:
    """The shift a batch shows, from its stored performance check (`PerformanceCheck.to_dict()`), the drift check's
    figures and the upstream-break reasons; a gap counts only beyond ``z`` standard errors of its band."""
    estimated, reference, realised = performance["estimated"], performance["reference"], performance.get("realised")
    level = float(estimated["level"])
    auc_se = band_standard_error(estimated["roc_auc"], level)
    rate_se = band_standard_error(estimated["positive_rate"], level)
    figures: dict[str, float | None] = {
        "estimated_roc_auc": estimated["roc_auc"]["estimate"],
        "reference_roc_auc": reference["roc_auc"]["estimate"],
        "estimated_positive_rate": estimated["positive_rate"]["estimate"],
        "reference_positive_rate": reference["positive_rate"]["estimate"],
        "roc_auc_standard_error": auc_se,
        "positive_rate_standard_error": rate_se,
        "realised_roc_auc": None if realised is None else realised["roc_auc"],
        "realised_positive_rate": None if realised is None else realised["positive_rate"],
    }
    labelled = realised is not None
    if upstream_breaks:
        return Diagnosis("upstream_break", tuple(upstream_breaks), figures, labelled)
    moved = _moved(estimated, reference, drifted_columns, prediction_drifted, z)
    if labelled:
        auc_gap = estimated["roc_auc"]["estimate"] - realised["roc_auc"]
        rate_gap = realised["positive_rate"] - estimated["positive_rate"]["estimate"]
        figures |= {"roc_auc_gap": auc_gap, "positive_rate_gap": rate_gap}
        if np.isfinite(auc_gap) and auc_gap > z * auc_se:
            return Diagnosis(
                "concept",
                (
                    f"realised ROC AUC {realised['roc_auc']:.3f} is {auc_gap:.3f} below the estimate "
                    f"{estimated['roc_auc']['estimate']:.3f} (> {z:g} x standard error {auc_se:.3f}): P(y|x) changed, "
                    "the scores no longer mean what they did; new labels are needed to retrain",
                    *moved,
                ),
                figures,
                labelled,
            )
        if abs(rate_gap) > z * rate_se:
            return Diagnosis(
                "prior",
                (
                    f"realised positive rate {realised['positive_rate']:.3f} against "
                    f"{estimated['positive_rate']['estimate']:.3f} expected from the scores "
                    f"(gap {rate_gap:+.3f} > {z:g} x standard error {rate_se:.3f}) while the "
                    f"ranking held (realised ROC AUC {realised['roc_auc']:.3f}, estimated "
                    f"{estimated['roc_auc']['estimate']:.3f})",
                    *moved,
                ),
                figures,
                labelled,
            )
    if moved:
        tracks = (
            (f"the estimate tracks the realised figures (ROC AUC gap {figures['roc_auc_gap']:+.3f})",)
            if labelled
            else ("no labels yet: prior or concept shift can be told apart once they arrive",)
        )
        return Diagnosis("covariate", (*moved, *tracks), figures, labelled)
    return Diagnosis("none", ("no feature, score or performance change beyond its noise",), figures, labelled)


def _moved(
    estimated: Mapping[str, Any],
    reference: Mapping[str, Any],
    drifted_columns: Sequence[str],
    prediction_drifted: bool,
    z: float,
) -> tuple[str, ...]:
    """What moved without labels: drifted columns, drifted scores, an estimated metric off its reference value."""
    level = float(estimated["level"])
    found = []
    if drifted_columns:
        found.append(f"drifted columns: {', '.join(drifted_columns)}")
    if prediction_drifted:
        found.append("the champion's scores drifted")
    for metric in ("roc_auc", "positive_rate"):
        batch, base = estimated[metric], reference[metric]
        se = float(np.hypot(band_standard_error(batch, level), band_standard_error(base, level)))
        gap = batch["estimate"] - base["estimate"]
        if abs(gap) > z * se:
            found.append(f"estimated {metric} {batch['estimate']:.3f} against {base['estimate']:.3f} on the reference")
    return tuple(found)
