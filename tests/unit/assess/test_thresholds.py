"""The evaluate stage's threshold policies, slice list and latency measurement: small inline data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from optiflow.assess.calibration import THRESHOLD_MARGIN, decision_threshold
from optiflow.assess.metrics import slice_specs
from optiflow.config import DataParams, EvaluateParams
from optiflow.timing import latency_ms_per_1k_rows

Y = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 1])
P = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9])


def test_fixed_policy_keeps_the_configured_threshold() -> None:
    assert decision_threshold(Y, P, EvaluateParams(threshold_policy="fixed", threshold=0.42)) == 0.42


def test_max_f1_and_cost_policies_choose_on_the_given_split() -> None:
    """Each cut sits just below the chosen score (calibration.THRESHOLD_MARGIN): that score's rows are positive."""
    margin = pytest.approx(-THRESHOLD_MARGIN, abs=1e-12)
    assert decision_threshold(Y, P, EvaluateParams(threshold_policy="max_f1")) - 0.35 == margin
    # missing a positive costs 10x a false alarm: the threshold drops to catch the positive at 0.35
    cheap_alarms = EvaluateParams(threshold_policy="cost", cost_fp=1.0, cost_fn=10.0)
    assert decision_threshold(Y, P, cheap_alarms) - 0.35 == margin
    costly_alarms = EvaluateParams(threshold_policy="cost", cost_fp=10.0, cost_fn=1.0)
    assert decision_threshold(Y, P, costly_alarms) - 0.6 == margin


def test_unknown_policy_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="threshold_policy"):
        EvaluateParams(threshold_policy="median")


def test_slices_are_each_sensitive_feature_their_intersection_then_extra_columns() -> None:
    data = DataParams(
        source="x.csv", target="y", positive_label=1, negative_label=0, sensitive_features=("sex", "age_band")
    )
    assert slice_specs(data, ("contract", "sex")) == ["sex", "age_band", ("sex", "age_band"), "contract"]
    single = data.model_copy(update={"sensitive_features": ("sex",)})
    assert slice_specs(single, ()) == ["sex"]


def test_latency_is_per_thousand_rows_and_positive() -> None:
    rows = pd.DataFrame({"a": np.linspace(0, 1, 200), "b": np.linspace(1, 0, 200)})
    model = LogisticRegression().fit(rows, (rows["a"] > 0.5).astype(int))
    latency = latency_ms_per_1k_rows(model, rows, repeats=3)
    assert 0 < latency < 1000
