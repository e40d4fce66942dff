"""The paired ROC AUC comparison: DeLong's variance against its definition, the bootstrap cross-check, and the error
rate of the promotion rule when the two models are equally good."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from optiflow.assess.paired import compare_auc, delong, paired_bootstrap


def _pair(n: int, seed: int, lift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated scores (rounded, so ties occur); ``lift`` makes the second one better."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.3).astype(int)
    shared = rng.normal(size=n)
    a = np.round(y + shared + rng.normal(scale=0.8, size=n), 1)
    b = np.round((1.0 + lift) * y + shared + rng.normal(scale=0.8, size=n), 1)
    return y, a, b


def _delong_by_definition(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """The variance of AUC(b) - AUC(a) from placement values computed pair by pair (O(m n), ties count half)."""
    placements = []
    for scores in (a, b):
        pos, neg = scores[y == 1], scores[y == 0]
        kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        placements.append((kernel.mean(axis=1), kernel.mean(axis=0)))
    (a10, a01), (b10, b01) = placements
    s10, s01 = np.cov(np.vstack([a10, b10])), np.cov(np.vstack([a01, b01]))
    m, n = len(a10), len(a01)
    return (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n


def test_delong_matches_sklearn_aucs_and_the_variance_by_definition() -> None:
    y, a, b = _pair(400, seed=1, lift=0.3)
    result = delong(y, a, b, confidence=0.9)
    assert result.baseline_auc == pytest.approx(roc_auc_score(y, a))
    assert result.challenger_auc == pytest.approx(roc_auc_score(y, b))
    assert result.estimate == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a))
    se = np.sqrt(_delong_by_definition(y, a, b))
    assert result.high - result.low == pytest.approx(2 * 1.6448536 * se, rel=1e-5)
    assert result.rows == 400 and result.positives == int(y.sum())


def test_bootstrap_agrees_with_delong() -> None:
    y, a, b = _pair(1500, seed=2, lift=0.2)
    exact, resampled = delong(y, a, b), paired_bootstrap(y, a, b, resamples=1000, seed=3)
    assert resampled.estimate == exact.estimate and resampled.method == "bootstrap"
    assert resampled.low == pytest.approx(exact.low, abs=0.006) and resampled.high == pytest.approx(
        exact.high, abs=0.006
    )
    assert resampled.p_better == pytest.approx(exact.p_better, abs=0.02)
    assert compare_auc(y, a, b, "bootstrap", resamples=1000, seed=3) == resampled


def test_identical_models_show_no_difference_and_no_improvement() -> None:
    y, a, _ = _pair(300, seed=4)
    result = delong(y, a, a.copy())
    assert result.estimate == result.low == result.high == 0.0 and result.p_better == 1.0


def test_equally_good_models_pass_the_superiority_rule_at_most_at_its_error_rate() -> None:
    """400 datasets where both models are equally good: the lower bound of the 95% interval clears 0 in about 2.5%
    of them (the rule's one-sided error), a rate a broken variance would miss either way."""
    promoted = [delong(*_pair(600, seed=seed)).low > 0 for seed in range(400)]
    assert 0.005 <= np.mean(promoted) <= 0.05


def test_a_real_improvement_is_found() -> None:
    y, a, b = _pair(1500, seed=5, lift=0.5)
    assert delong(y, a, b).low > 0


def test_one_class_or_unequal_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="both classes"):
        delong(np.ones(5), np.arange(5.0), np.arange(5.0))
    with pytest.raises(ValueError, match="lengths differ"):
        delong(np.array([0, 1, 0]), np.arange(3.0), np.arange(4.0))


def test_a_gain_within_the_noise_passes_the_old_rule_but_not_the_paired_one() -> None:
    """Equally good models whose point difference favours the challenger by chance: the old rule (AUC at least the
    champion's + 0.001) promoted it; the interval of the paired test still holds 0, so it is not promoted."""
    seed = next(s for s in range(100) if 0.004 < delong(*_pair(1400, seed=s)).estimate < 0.01)
    result = delong(*_pair(1400, seed=seed))
    assert result.estimate >= 0.001 and result.low < 0 < result.high
