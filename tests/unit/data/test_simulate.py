"""Each simulated scenario changes what its name claims, keeps labels, draws from the pool without replacement, and
stays reproducible."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optiflow.config import SimulateParams, parse_params
from optiflow.data.keys import KEY_COLUMN, unique_keys, with_keys
from optiflow.data.simulate import SCENARIOS, gradual_price_increase, scenario, simulate
from optiflow.errors import DataError
from tests.conftest import shipped_params

DATA = parse_params(shipped_params()).data
PARAMS = SimulateParams(batch_rows=800)


@pytest.fixture(scope="module")
def test_split(churn_sample: pd.DataFrame) -> pd.DataFrame:
    """The pool the simulator draws from (here the keyed sample, one row per key as the split leaves it)."""
    return unique_keys(with_keys(churn_sample.drop(columns=["rownames"], errors="ignore"), DATA))[0]


def make(name: str, frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    return scenario(name).make(frame, DATA, PARAMS, np.random.default_rng(seed))


def monthly(frame: pd.DataFrame) -> float:
    return float((frame["contract"] == "Month-to-month").mean())


def test_control_is_unchanged_rows_of_the_source(test_split: pd.DataFrame) -> None:
    batch = make("control", test_split)
    assert len(batch) == 800 and list(batch.columns) == list(test_split.columns)
    assert len(batch.merge(test_split.drop_duplicates(), how="left", indicator=True).query("_merge == 'both'")) == 800
    assert abs(monthly(batch) - monthly(test_split)) < 0.05


def test_price_increase_raises_charges_and_month_to_month_churn(test_split: pd.DataFrame) -> None:
    control, batch = make("control", test_split), make("price_increase", test_split)
    assert batch["monthly_charges"].mean() == pytest.approx(control["monthly_charges"].mean() * 1.25, rel=0.02)
    churn = (batch["churn"] == "Yes").mean()
    assert churn > (control["churn"] == "Yes").mean() + 0.05
    assert set(batch["churn"]) == {"Yes", "No"}


def test_contract_mix_reaches_the_requested_share(test_split: pd.DataFrame) -> None:
    assert monthly(test_split) < 0.65
    assert monthly(make("contract_mix", test_split)) == pytest.approx(0.9, abs=0.03)


def _segment(frame: pd.DataFrame) -> pd.Series:
    return (frame["internet_service"] == "Fiber optic") & (frame["tenure"] <= 6)


def test_new_segment_is_the_requested_share_of_new_fiber_customers(test_split: pd.DataFrame) -> None:
    available = int(_segment(test_split).sum())
    assert available / len(test_split) < 0.2
    small = PARAMS.model_copy(update={"batch_rows": int(available / 0.6)})  # the pool holds enough segment rows
    batch = scenario("new_segment").make(test_split, DATA, small, np.random.default_rng(0))
    assert _segment(batch).mean() == pytest.approx(0.6, abs=0.01) and batch[KEY_COLUMN].is_unique


def test_a_share_the_pool_cannot_fill_takes_every_matching_row_and_says_so(
    test_split: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    batch = make("new_segment", test_split)  # 800 rows want 480 new fiber customers; the pool has fewer
    assert _segment(batch).sum() == _segment(test_split).sum() and batch[KEY_COLUMN].is_unique
    assert "so the batch has" in caplog.text and "not 60%" in caplog.text


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_every_scenario_draws_pool_rows_without_replacement(test_split: pd.DataFrame, name: str) -> None:
    batch = make(name, test_split)
    assert len(batch) == 800 and batch[KEY_COLUMN].is_unique and set(batch[KEY_COLUMN]) <= set(test_split[KEY_COLUMN])


def test_a_batch_larger_than_the_pool_is_refused(test_split: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"batch_rows is 5000 but the pool holds \d+ rows"):
        simulate(test_split, DATA, PARAMS.model_copy(update={"batch_rows": 5000}), seed=0)


def test_broken_units_reports_tenure_in_years_inside_the_valid_range(test_split: pd.DataFrame) -> None:
    batch = make("broken_units", test_split)
    assert batch["tenure"].max() <= test_split["tenure"].max() / 12 + 0.01
    assert batch["tenure"].min() >= 0  # still passes validate.ranges: only drift can catch it


def test_simulate_writes_controls_then_every_scenario_reproducibly(test_split: pd.DataFrame) -> None:
    params = PARAMS.model_copy(update={"control_batches": 2})
    batches = simulate(test_split, DATA, params, seed=3)
    assert [name for name, _ in batches] == [
        "001-control-1",
        "002-control-2",
        "003-price_increase",
        "004-contract_mix",
        "005-new_segment",
        "006-broken_units",
    ]
    again = simulate(test_split, DATA, params, seed=3)
    assert all(a.equals(b) for (_, a), (_, b) in zip(batches, again, strict=True))
    assert {s.name for s in SCENARIOS} == {"control", "price_increase", "contract_mix", "new_segment", "broken_units"}


def test_gradual_series_grows_linearly_from_no_drift(test_split: pd.DataFrame) -> None:
    params = PARAMS.model_copy(update={"gradual_batches": 5, "gradual_max_increase": 0.4})
    series = gradual_price_increase(test_split, DATA, params, seed=1)
    assert [increase for _, _, increase in series] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    means = [frame["monthly_charges"].mean() for _, frame, _ in series]
    assert means == sorted(means)
