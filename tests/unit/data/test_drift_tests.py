"""Which drift test each column gets: by type, number of values and batch size, or as params.yaml pins it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from optiflow.config import DriftTest, MonitorParams
from optiflow.data.drift_tests import TWO_SAMPLE_CHISQUARE, choose_tests, describe_test

PARAMS = MonitorParams()


def _cities(rows: int, seed: int, levels: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, levels + 1)
    city = rng.choice([f"city{i:02d}" for i in range(levels)], rows, p=weights / weights.sum())
    return pd.DataFrame({"city": city, "income": rng.lognormal(10, 0.6, rows), "flag": np.arange(rows) % 2})


def test_each_column_gets_its_test_by_type_values_and_batch_size() -> None:
    reference = _cities(1000, 0)
    numeric, categorical = ["income"], ["city", "flag"]
    small = choose_tests(reference, numeric, categorical, 100, PARAMS)
    alpha = float(f"{PARAMS.false_alarm_rate / 3:.2g}")  # written with two significant digits
    assert small == {
        "income": DriftTest(method="ks", threshold=alpha),
        "city": DriftTest(method=TWO_SAMPLE_CHISQUARE, threshold=alpha),
        "flag": DriftTest(method=TWO_SAMPLE_CHISQUARE, threshold=alpha),
    }
    big_reference = pd.concat([reference] * 20, ignore_index=True)  # 20,000 rows, so distances are safe to use
    big = choose_tests(big_reference, numeric, categorical, 100_000, PARAMS)
    assert big["income"] == DriftTest(method="wasserstein", threshold=0.1)
    assert big["flag"] == big["city"] == DriftTest(method="jensenshannon", threshold=0.1)
    mid = choose_tests(reference, numeric, categorical, 1000, PARAMS)  # two values at 500 effective rows: a distance
    assert mid["flag"].method == "jensenshannon" and mid["city"].method == TWO_SAMPLE_CHISQUARE
    pinned = PARAMS.model_copy(update={"drift_tests": {"income": DriftTest(method="psi", threshold=0.2)}})
    assert choose_tests(reference, numeric, categorical, 200, pinned)["income"] == DriftTest(
        method="psi", threshold=0.2
    )


def test_tests_read_as_people_write_them() -> None:
    assert describe_test(DriftTest(method="ks", threshold=0.00005)) == "ks p < 5e-05"
    assert describe_test(DriftTest(method="wasserstein", threshold=0.1)) == "wasserstein >= 0.1"
