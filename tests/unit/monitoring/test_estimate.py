"""Label-free performance estimation: for a perfectly calibrated model the estimate matches the truth, its band
covers the realised metric at the stated rate, and a broken calibration is noticed."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from optiflow.monitoring.estimate import calibration_check, estimate_performance, expected_metrics, realised_metrics


def calibrated_batch(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them: calibrated by construction (shift moves the covariates)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (1.0 + np.exp(-(rng.normal(shift, 1.5, n) - 1.0)))
    return p, (rng.random(n) < p).astype(int)


def test_realised_metrics_match_sklearn() -> None:
    p, y = calibrated_batch(500, 1)
    realised = realised_metrics(y, p, 0.4)
    assert realised["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert realised["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.4))
    assert realised["f1"] == pytest.approx(f1_score(y, p >= 0.4))
    assert realised["positive_rate"] == pytest.approx(y.mean())


def test_for_a_calibrated_model_the_estimate_is_the_mean_of_the_truth() -> None:
    """Over many label draws from the same calibrated scores, the realised metrics average to the estimate."""
    p, _ = calibrated_batch(2000, 2)
    expected = expected_metrics(p, 0.4)
    draws = (np.random.default_rng(3).random((300, len(p))) < p).astype(int)
    realised = [realised_metrics(y, p, 0.4) for y in draws]
    for name in ("roc_auc", "accuracy", "f1", "positive_rate"):
        assert np.mean([r[name] for r in realised]) == pytest.approx(expected[name], abs=0.003), name


@pytest.mark.parametrize("shift", [0.0, 1.0, -1.0])
def test_the_band_covers_the_realised_metric_at_its_level(shift: float) -> None:
    """Batches of 500 under covariate shift (scores still calibrated): the 95% band covers about 95% of them."""
    covered = {name: 0 for name in ("roc_auc", "accuracy", "f1", "positive_rate")}
    batches = 200
    for seed in range(batches):
        p, y = calibrated_batch(500, 100 + seed, shift)
        estimate = estimate_performance(p, 0.4, draws=200, seed=seed)
        realised = realised_metrics(y, p, 0.4)
        for name in covered:
            covered[name] += estimate.metrics[name].covers(realised[name])
    assert all(count >= 0.9 * batches for count in covered.values()), covered  # 95% expected; 90% is 3 sd below


def test_the_band_narrows_as_the_batch_grows() -> None:
    small = estimate_performance(*calibrated_batch(200, 5)[:1], 0.4, seed=1).metrics["roc_auc"]
    large = estimate_performance(*calibrated_batch(5000, 5)[:1], 0.4, seed=1).metrics["roc_auc"]
    assert (large.high - large.low) < (small.high - small.low) / 3


def test_tied_calibrated_scores_are_ranked_by_the_raw_score() -> None:
    """Isotonic calibration makes steps: ranking by the raw score keeps the ROC curve's resolution."""
    p, y = calibrated_batch(3000, 6)
    stepped = np.round(p, 1)  # a coarse calibration map
    by_steps = expected_metrics(stepped, 0.4)["roc_auc"]
    by_raw = expected_metrics(stepped, 0.4, ranking=p)["roc_auc"]
    assert by_raw > by_steps and abs(by_raw - roc_auc_score(y, p)) < 0.03


def test_calibration_check_passes_calibrated_rows_and_names_the_bin_that_broke() -> None:
    p, y = calibrated_batch(3000, 7)
    assert calibration_check(y, p).holds
    overconfident = np.clip(p * 1.6, 0, 1)  # scores inflated: the high bins expect far more positives than occur
    check = calibration_check(y, overconfident)
    assert not check.holds and "expected" in check.worst_bin and check.ece > calibration_check(y, p).ece


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_metrics(np.array([0.2, 1.3]), 0.5)
    with pytest.raises(ValueError, match="non-empty"):
        estimate_performance(np.array([]), 0.5)
