"""Calibration error, reliability bins, threshold policies and metrics by slice on synthetic scores."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from optiflow.assess.calibration import (
    THRESHOLD_MARGIN,
    choose_threshold,
    expected_calibration_error,
    reliability_figure,
    reliability_table,
    slice_metrics,
)


def calibrated(n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn with exactly the predicted probability: calibrated by construction."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.0, 1.0, n)
    return (rng.uniform(0.0, 1.0, n) < p).astype(int), p


def test_ece_is_small_for_calibrated_and_large_for_overconfident_scores():
    y, p = calibrated()
    assert expected_calibration_error(y, p) < 0.03
    overconfident = np.where(p > 0.5, 1.0 - (1.0 - p) ** 4, p**4)  # pushed towards 0 and 1
    assert expected_calibration_error(y, overconfident) > 0.1


def test_reliability_table_bins_cover_every_row_and_skip_empty_bins():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.05, 0.12, 0.91, 0.95, 1.0])
    table = reliability_table(y, p, bins=10)
    assert table["count"].sum() == 5
    assert table["bin"].tolist() == [0, 1, 9]  # 1.0 falls in the last bin, empty bins are absent
    last = table.iloc[-1]
    assert last["observed_rate"] == 1.0 and last["mean_predicted"] == pytest.approx((0.91 + 0.95 + 1.0) / 3)
    assert (table["lower"] <= table["mean_predicted"]).all() and (table["mean_predicted"] <= table["upper"]).all()


def skewed(n: int = 2000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """10% positives with scores that rarely cross 0.5: the default threshold misses most positives."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.1).astype(int)
    p = np.clip(0.15 + 0.2 * y + rng.normal(0.0, 0.1, n), 0.0, 1.0)
    return y, p


def test_max_f1_threshold_beats_the_default_on_a_skewed_case():
    y, p = skewed()
    threshold, best_f1 = choose_threshold(y, p, "max_f1")
    assert threshold < 0.5
    assert best_f1 == pytest.approx(f1_score(y, (p >= threshold).astype(int)))
    assert best_f1 > f1_score(y, (p >= 0.5).astype(int), zero_division=0) + 0.2


def test_cost_policy_moves_the_threshold_with_the_costs():
    y, p = skewed()
    even, _ = choose_threshold(y, p, "cost", cost_fp=1.0, cost_fn=1.0)
    costly_misses, _ = choose_threshold(y, p, "cost", cost_fp=1.0, cost_fn=10.0)
    costly_alarms, _ = choose_threshold(y, p, "cost", cost_fp=10.0, cost_fn=1.0)
    assert costly_misses < even <= costly_alarms


def test_cost_value_is_the_mean_cost_per_row():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    threshold, cost = choose_threshold(y, p, "cost", cost_fp=1.0, cost_fn=3.0)
    assert 0.4 - THRESHOLD_MARGIN <= threshold < 0.4  # catches both positives at the price of one false alarm
    assert cost == pytest.approx(1.0 / 4)


def test_the_cut_sits_just_below_the_chosen_score_labelling_the_same_rows() -> None:
    """An isotonic plateau of nine rows holds the chosen score; the cut goes THRESHOLD_MARGIN below it (half way to
    the next lower score when that is closer), so the same rows are positive and a runtime a rounding error below
    the score still labels the plateau positive."""
    y = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.2, 0.3, *[0.6] * 9, 0.9]) + 0.0123456789
    threshold, _ = choose_threshold(y, p, "max_f1")
    chosen = 0.6 + 0.0123456789
    assert threshold == pytest.approx(chosen - THRESHOLD_MARGIN, abs=1e-12)
    np.testing.assert_array_equal(p >= threshold, p >= chosen)
    np.testing.assert_array_equal(p - 1e-7 >= threshold, p >= chosen)
    close = np.array([0.1, 0.6, 0.6 + 4e-6, 0.9])
    near, _ = choose_threshold(np.array([0, 0, 1, 1]), close, "max_f1")
    assert near == pytest.approx(0.6 + 2e-6, abs=1e-12)  # half way: the row at 0.6 stays negative


def test_the_margin_below_a_chosen_score_covers_the_onnx_parity_tolerance() -> None:
    from optiflow.release.onnx import PARITY_TOLERANCE

    assert THRESHOLD_MARGIN >= PARITY_TOLERANCE


def test_choose_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(np.zeros(4, dtype=int), np.linspace(0, 1, 4))
    with pytest.raises(ValueError, match="unknown threshold policy"):
        choose_threshold(np.array([0, 1]), np.array([0.2, 0.8]), "youden")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0/1 labels"):
        choose_threshold(np.array([0, 2]), np.array([0.2, 0.8]))


def test_slice_metrics_by_column_and_intersection_with_single_class_slice():
    frame = pd.DataFrame(
        {
            "contract": ["monthly", "monthly", "monthly", "monthly", "yearly", "yearly"],
            "female": [0, 1, 0, 1, 0, 1],
        }
    )
    y = np.array([1, 0, 1, 0, 0, 0])
    p = np.array([0.9, 0.2, 0.4, 0.6, 0.1, 0.3])
    table = slice_metrics(frame, y, p, 0.5, ["contract", ("contract", "female")])
    by_value = table.set_index("value")
    assert by_value.loc["contract=monthly", "count"] == 4
    assert by_value.loc["contract=monthly", "roc_auc"] == pytest.approx(0.75)
    assert np.isnan(by_value.loc["contract=yearly", "roc_auc"])  # one class only: NaN, not an error
    assert by_value.loc["contract=yearly", "accuracy"] == 1.0
    assert by_value.loc["contract=monthly, female=0", "positive_rate"] == 1.0
    assert set(table["slice"]) == {"contract", "contract & female"}


def test_slice_metrics_names_a_missing_column():
    with pytest.raises(ValueError, match="tenure_band"):
        slice_metrics(pd.DataFrame({"a": [1, 2]}), np.array([0, 1]), np.array([0.2, 0.7]), 0.5, ["tenure_band"])


def test_reliability_figure_draws_one_curve_per_candidate():
    y, p = calibrated(n=500)
    figure = reliability_figure({"a": reliability_table(y, p), "b": reliability_table(y, p**2)})
    assert len(figure.axes[0].lines) == 3  # diagonal + two candidates
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")
