"""Each simulated scenario changes what its settings say, keeps labels, draws from the pool without replacement, stays
reproducible, and fits any table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optiflow.config import DataParams, SimulateParams, parse_params
from optiflow.data.keys import KEY_COLUMN, unique_keys, with_keys
from optiflow.data.simulate import derive_scenarios, gradual_series, make_batch, simulate
from optiflow.errors import ConfigError, DataError
from tests.conftest import shipped_params

SHIPPED = parse_params(shipped_params())
DATA = SHIPPED.data
PARAMS = SHIPPED.simulate.model_copy(update={"batch_rows": 800})
BY_NAME = {scenario.name: scenario for scenario in PARAMS.scenarios}


@pytest.fixture(scope="module")
def test_split(churn_sample: pd.DataFrame) -> pd.DataFrame:
    """The pool the simulator draws from (here the keyed sample, one row per key as the split leaves it)."""
    return unique_keys(with_keys(churn_sample.drop(columns=["rownames"], errors="ignore"), DATA))[0]


def make(name: str | None, frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    return make_batch(BY_NAME.get(name), frame, DATA, PARAMS.batch_rows, np.random.default_rng(seed))


def monthly(frame: pd.DataFrame) -> float:
    return float((frame["contract"] == "Month-to-month").mean())


def test_control_is_unchanged_rows_of_the_source(test_split: pd.DataFrame) -> None:
    batch = make(None, test_split)
    assert len(batch) == 800 and list(batch.columns) == list(test_split.columns)
    assert len(batch.merge(test_split.drop_duplicates(), how="left", indicator=True).query("_merge == 'both'")) == 800
    assert abs(monthly(batch) - monthly(test_split)) < 0.05


def test_price_increase_raises_charges_and_month_to_month_churn(test_split: pd.DataFrame) -> None:
    control, batch = make(None, test_split), make("price_increase", test_split)
    assert batch["monthly_charges"].mean() == pytest.approx(control["monthly_charges"].mean() * 1.25, rel=0.02)
    churn = (batch["churn"] == "Yes").mean()
    assert churn > (control["churn"] == "Yes").mean() + 0.05
    assert set(batch["churn"]) == {"Yes", "No"}
    moved = batch[(batch["contract"] != "Month-to-month")]
    assert (moved["churn"] == "Yes").mean() < churn  # only those free to leave churn more


def test_contract_mix_reaches_the_requested_share(test_split: pd.DataFrame) -> None:
    assert monthly(test_split) < 0.65
    assert monthly(make("contract_mix", test_split)) == pytest.approx(0.9, abs=0.03)


def _segment(frame: pd.DataFrame) -> pd.Series:
    return (frame["internet_service"] == "Fiber optic") & (frame["tenure"] <= 6)


def test_new_segment_is_the_requested_share_of_new_fiber_customers(test_split: pd.DataFrame) -> None:
    available = int(_segment(test_split).sum())
    assert available / len(test_split) < 0.2
    small = PARAMS.model_copy(update={"batch_rows": int(available / 0.6)})  # the pool holds enough segment rows
    batch = make_batch(BY_NAME["new_segment"], test_split, DATA, small.batch_rows, np.random.default_rng(0))
    assert _segment(batch).mean() == pytest.approx(0.6, abs=0.01) and batch[KEY_COLUMN].is_unique


def test_a_share_the_pool_cannot_fill_takes_every_matching_row_and_says_so(
    test_split: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    batch = make("new_segment", test_split)  # 800 rows want 480 new fiber customers; the pool has fewer
    assert _segment(batch).sum() == _segment(test_split).sum() and batch[KEY_COLUMN].is_unique
    assert "so the batch has" in caplog.text and "not 60%" in caplog.text


@pytest.mark.parametrize("name", [None, *BY_NAME])
def test_every_scenario_draws_pool_rows_without_replacement(test_split: pd.DataFrame, name: str | None) -> None:
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


def test_gradual_series_grows_linearly_from_no_drift(test_split: pd.DataFrame) -> None:
    params = PARAMS.model_copy(update={"gradual_batches": 5, "gradual_max_increase": 0.4})
    series = gradual_series(test_split, DATA, params, seed=1)
    assert [increase for _, _, increase in series] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    means = [frame["monthly_charges"].mean() for _, frame, _ in series]
    assert means == sorted(means)
    with pytest.raises(ConfigError, match="no scale scenario named 'nope'"):
        gradual_series(test_split, DATA, params.model_copy(update={"gradual_scenario": "nope"}), seed=1)


def _credit(rows: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, rows).astype(float),
            "loan amount": rng.lognormal(8, 1, rows),
            "purpose": rng.choice(["car", "house", "education", "other"], rows, p=[0.5, 0.3, 0.15, 0.05]),
            "risk": rng.choice(["good", "bad"], rows, p=[0.8, 0.2]),
        }
    )


def test_scenarios_are_derived_from_a_table_unlike_the_default_one() -> None:
    frame = _credit(6000)  # batches are drawn without replacement: the rarest purpose must fill 60% of 400 rows
    data = DataParams(source="c.csv", target="risk", positive_label="bad", negative_label="good")
    derived = derive_scenarios(frame, data)
    assert [(s.name, s.kind, s.columns()) for s in derived] == [  # the busiest numeric column, the rarest purpose
        ("loan_amount_up", "scale", ("loan amount",)),
        ("purpose_mix", "mix", ("purpose",)),
        ("loan_amount_low", "segment", ("loan amount",)),
    ]
    assert derived[1].value == "other"
    batches = dict(simulate(frame, data, SimulateParams(batch_rows=400), seed=0))
    scaled, mixed = derived[0].column, derived[1]
    assert batches[f"002-{derived[0].name}"][scaled].mean() > 1.15 * batches["001-control-1"][scaled].mean()
    assert (batches[f"003-{mixed.name}"]["purpose"] == "other").mean() == pytest.approx(0.6, abs=0.07)
    low = batches[f"004-{derived[2].name}"][scaled] <= frame[scaled].quantile(0.25)
    assert low.mean() >= 0.6


def test_a_table_without_numeric_or_categorical_columns_gets_fewer_scenarios() -> None:
    frame = pd.DataFrame({"x": np.arange(50.0), "y": [0, 1] * 25})
    data = DataParams(source="t.csv", target="y", positive_label=1, negative_label=0)
    assert [s.kind for s in derive_scenarios(frame, data)] == ["scale", "segment"]
