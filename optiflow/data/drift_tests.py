"""Which drift test fits a column: chosen by its type, its number of values and the batch's size, so that a batch
drawn from the training distribution flags nothing (optiflow.monitoring.drift runs them with Evidently; `optiflow
init` writes them into params.yaml).

A distance (Wasserstein for numbers, Jensen-Shannon for categories; params `monitor:`) is used when the batch is big
enough that the distance's own noise stays below its threshold, so a huge batch is not flagged for a negligible
shift; otherwise a two-sample test (Kolmogorov-Smirnov, or chi-square with rare values pooled) whose p-value
threshold is monitor.false_alarm_rate divided by the number of tests (Bonferroni). A Jensen-Shannon distance's noise
grows with a category's number of values: between two 1,000-row samples of one 50-value distribution it is about 0.1.
"""

from __future__ import annotations

import math

import pandas as pd

from optiflow.config import DriftTest, MonitorParams

PREDICTION = "prediction"  # the champion's positive-class score: tested like a numeric column

TWO_SAMPLE_CHISQUARE = "two_sample_chisquare"  # registered with Evidently by check_drift
P_VALUE_METHODS = (
    "ks",
    "chisquare",
    TWO_SAMPLE_CHISQUARE,
    "z",
    "fisher_exact",
    "anderson",
    "mannw",
    "t_test",
    "g_test",
)
# sqrt(effective rows) x threshold above which a normed Wasserstein distance between two samples of one distribution
# stays below the threshold: its 1-in-10,000 quantile reached 6.4 for skewed, zero-inflated columns in simulation
NUMERIC_NOISE_MARGIN = 7.0


def choose_tests(
    reference: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    batch_rows: int,
    params: MonitorParams,
) -> dict[str, DriftTest]:
    """The drift test of each column for a batch of ``batch_rows`` rows against ``reference``: monitor.drift_tests
    when it names the column, else a distance when the batch is big enough for it, else a two-sample test at
    false_alarm_rate / (number of columns). The scores (PREDICTION, numeric) use prediction_method/threshold."""
    columns = [*numeric, *categorical]
    alpha = float(f"{params.false_alarm_rate / max(len(columns), 1):.2g}")  # two significant digits, as written
    effective = len(reference) * batch_rows / max(len(reference) + batch_rows, 1)  # n1 n2 / (n1 + n2)
    tests = {}
    for column in columns:
        if column in params.drift_tests:
            tests[column] = params.drift_tests[column]
        elif column in numeric:
            method, threshold = (
                (params.prediction_method, params.prediction_threshold)
                if column == PREDICTION
                else (params.num_method, params.num_threshold)
            )
            distance = threshold * math.sqrt(effective) >= NUMERIC_NOISE_MARGIN
            tests[column] = (
                DriftTest(method=method, threshold=threshold) if distance else DriftTest(method="ks", threshold=alpha)
            )
        else:
            levels = max(int(reference[column].nunique()), 2)
            noise = _chi2_tail(8.0 * params.cat_threshold**2 * effective, levels - 1)  # null JS distance >= threshold
            tests[column] = (
                DriftTest(method=params.cat_method, threshold=params.cat_threshold)
                if noise <= alpha
                else DriftTest(method=TWO_SAMPLE_CHISQUARE, threshold=alpha)
            )
    return tests


def describe_test(test: DriftTest) -> str:
    """``ks p < 5e-05`` or ``wasserstein >= 0.1``: a test as people read it."""
    if test.method in P_VALUE_METHODS:
        return f"{test.method} p < {test.threshold:.2g}"
    return f"{test.method} >= {test.threshold:g}"


def _chi2_tail(statistic: float, degrees: int) -> float:
    from scipy.stats import chi2

    return float(chi2.sf(statistic, degrees))
