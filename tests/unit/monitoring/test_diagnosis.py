"""Shift diagnosis on synthetic batches whose kind of change is known: covariate, prior, concept, upstream break,
none; and the impact read from a performance check (realised when labelled, estimated before)."""

from __future__ import annotations

import numpy as np
import pytest

from optiflow.monitoring.diagnosis import diagnose
from optiflow.monitoring.performance import assess_performance, performance_impact

THRESHOLD = 0.35


def scores(n: int, seed: int, mean: float = -1.0, spread: float = 1.5) -> np.ndarray:
    """Calibrated scores of a synthetic model; ``mean`` moves the covariates (covariate shift)."""
    return 1.0 / (1.0 + np.exp(-np.random.default_rng(seed).normal(mean, spread, n)))


def labels(p: np.ndarray, seed: int) -> np.ndarray:
    """Labels drawn from the scores: P(y|x) unchanged."""
    return (np.random.default_rng(seed).random(len(p)) < p).astype(int)


REFERENCE = scores(1500, 1)
REFERENCE_LABELS = labels(REFERENCE, 2)


def check(batch: np.ndarray, batch_labels: np.ndarray | None = None) -> dict:
    return assess_performance(
        REFERENCE, REFERENCE_LABELS, batch, THRESHOLD, batch_labels=batch_labels, draws=300
    ).to_dict()


def test_an_undrifted_batch_is_diagnosed_none_labelled_or_not() -> None:
    batch = scores(800, 3)
    assert diagnose(check(batch)).shift == "none"
    labelled = diagnose(check(batch, labels(batch, 4)))
    assert labelled.shift == "none" and labelled.labelled


def test_moved_covariates_are_covariate_shift_and_the_estimate_tracks_the_realised_auc() -> None:
    batch = scores(800, 5, mean=0.5)  # many more likely churners, P(y|x) unchanged
    before = diagnose(check(batch), drifted_columns=["tenure"])
    assert before.shift == "covariate" and any("labels" in line for line in before.evidence)
    after = diagnose(check(batch, labels(batch, 6)), drifted_columns=["tenure"])
    assert after.shift == "covariate" and "tenure" in after.evidence[0]
    assert abs(after.figures["roc_auc_gap"]) < 3 * after.figures["roc_auc_standard_error"]


def test_a_moved_positive_rate_with_the_ranking_intact_is_prior_shift() -> None:
    batch = scores(800, 7)
    y = labels(batch, 8)
    rng = np.random.default_rng(9)
    # label shift: keep every positive, drop most negatives (P(x|y) unchanged, the positive rate doubles)
    kept = (y == 1) | (rng.random(len(y)) < 0.3)
    diagnosis = diagnose(check(batch[kept], y[kept]))
    assert diagnosis.shift == "prior", diagnosis.evidence
    assert diagnosis.figures["positive_rate_gap"] > 0.1


def test_relabelled_segment_is_concept_shift() -> None:
    batch = scores(800, 10)
    y = labels(batch, 11)
    segment = batch < 0.3  # their churn no longer follows the scores
    y[segment] = (np.random.default_rng(12).random(segment.sum()) < 0.6).astype(int)
    diagnosis = diagnose(check(batch, y))
    assert diagnosis.shift == "concept" and "P(y|x) changed" in diagnosis.evidence[0]
    assert diagnosis.figures["roc_auc_gap"] > 0.05


def test_an_upstream_break_wins_over_everything_else() -> None:
    batch = scores(800, 13)
    reason = "column 'tenure': mean size 2.7 against 32 in the reference (x0.084)"
    diagnosis = diagnose(check(batch), drifted_columns=["tenure"], upstream_breaks=[reason])
    assert diagnosis.shift == "upstream_break" and diagnosis.evidence == (reason,)


def test_impact_is_realised_once_labelled_estimated_before_and_noise_is_not_significant() -> None:
    batch = scores(800, 14)
    estimated = performance_impact(check(batch), z=2.0)
    assert estimated.source == "estimated" and not estimated.significant
    assert estimated.standard_error > 0
    y = labels(batch, 15)
    y[batch < 0.3] = (np.random.default_rng(16).random((batch < 0.3).sum()) < 0.6).astype(int)
    realised = performance_impact(check(batch, y), z=2.0)
    assert realised.source == "realised" and realised.significant
    assert realised.drop == pytest.approx(realised.baseline - realised.value)
