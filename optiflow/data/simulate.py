"""Realistic labelled batches drawn from the pool (split.pool_size): rows set aside at the split that no model trains
on or is judged on, each batch drifted in one documented way.

Every batch is drawn without replacement from the pool, so a batch never holds a row twice, and a batch larger than
the pool is refused; batches are drawn independently, so two batches may share rows (a customer seen again next
month). The rows keep their ``row_key``: the retraining set keeps one row per key and never lets a key that
evaluates also train. A control batch is what undrifted production data looks like; each scenario changes what its
name says (and what follows from it), and keeps every value inside the validation suite unless the scenario is
about broken data. Written for the churn table: scenarios name its columns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from optiflow.config import DataParams, SimulateParams
from optiflow.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    make: Callable[[pd.DataFrame, DataParams, SimulateParams, np.random.Generator], pd.DataFrame]


def draw(frame: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """``rows`` rows of ``frame`` without replacement; only a caller asking for more rows than ``frame`` holds (a
    scale benchmark, never the simulator, which checks first) gets rows repeated, and a warning saying so."""
    replace = rows > len(frame)
    if replace:
        log.warning("drawing %d rows from %d with replacement: rows repeat", rows, len(frame))
    index = rng.choice(len(frame), size=rows, replace=replace)
    return frame.iloc[index].reset_index(drop=True)


def draw_mix(
    frame: pd.DataFrame, chosen: np.ndarray, share: float, rows: int, rng: np.random.Generator, what: str
) -> pd.DataFrame:
    """``rows`` rows without replacement, ``share`` of them where ``chosen`` holds; when ``frame`` has too few of
    either kind, every row of that kind is taken, the rest filled from the other, and the shortfall is logged."""
    inside, outside = frame[chosen], frame[~chosen]
    wanted = round(rows * share)
    taken = min(wanted, len(inside))
    taken = max(taken, rows - len(outside))
    if taken != wanted:
        log.warning(
            "%s: the pool holds %d matching and %d other rows, so the batch has %.0f%% %s, not %.0f%%",
            what,
            len(inside),
            len(outside),
            100 * taken / rows,
            what,
            100 * share,
        )
    parts = [draw(inside, taken, rng), draw(outside, rows - taken, rng)]
    return pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=int(rng.integers(2**31)))


def control(frame: pd.DataFrame, data: DataParams, params: SimulateParams, rng: np.random.Generator) -> pd.DataFrame:
    return draw(frame, params.batch_rows, rng)


def price_increase(
    frame: pd.DataFrame,
    data: DataParams,
    params: SimulateParams,
    rng: np.random.Generator,
    increase: float | None = None,
) -> pd.DataFrame:
    """Monthly charges rise; month-to-month customers (free to leave) churn more, in proportion to the rise."""
    increase = params.price_increase if increase is None else increase
    batch = draw(frame, params.batch_rows, rng)
    batch["monthly_charges"] = (batch["monthly_charges"] * (1.0 + increase)).round(2)
    free_to_leave = (batch["contract"] == "Month-to-month") & (batch[data.target] == data.negative_label)
    leaves = free_to_leave & (rng.random(len(batch)) < min(increase, 1.0))
    batch.loc[leaves, data.target] = data.positive_label
    return batch


def contract_mix(
    frame: pd.DataFrame, data: DataParams, params: SimulateParams, rng: np.random.Generator
) -> pd.DataFrame:
    """Month-to-month contracts become the given share (a sales campaign); whole rows, so labels stay real."""
    monthly = (frame["contract"] == "Month-to-month").to_numpy()
    return draw_mix(frame, monthly, params.contract_month_to_month, params.batch_rows, rng, "month-to-month")


def new_segment(
    frame: pd.DataFrame, data: DataParams, params: SimulateParams, rng: np.random.Generator
) -> pd.DataFrame:
    """A wave of new fiber customers (tenure up to 6 months) makes up the given share of the batch."""
    segment = ((frame["internet_service"] == "Fiber optic") & (frame["tenure"] <= 6)).to_numpy()
    return draw_mix(frame, segment, params.segment_share, params.batch_rows, rng, "new fiber customers")


def broken_units(
    frame: pd.DataFrame, data: DataParams, params: SimulateParams, rng: np.random.Generator
) -> pd.DataFrame:
    """An upstream change reports tenure in years instead of months: still inside the validation range."""
    batch = draw(frame, params.batch_rows, rng)
    batch["tenure"] = (batch["tenure"] / 12.0).round(2)
    return batch


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("control", "undrifted rows of the pool", control),
    Scenario("price_increase", "monthly charges up; month-to-month customers churn more", price_increase),
    Scenario("contract_mix", "month-to-month contracts become the large majority", contract_mix),
    Scenario("new_segment", "a wave of new fiber-optic customers", new_segment),
    Scenario("broken_units", "tenure reported in years instead of months", broken_units),
)


def scenario(name: str) -> Scenario:
    for candidate in SCENARIOS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"unknown scenario {name!r}; scenarios: {[s.name for s in SCENARIOS]}")


def check_pool(pool: pd.DataFrame, params: SimulateParams) -> None:
    """The pool must hold a whole batch: rows are never drawn twice into one batch."""
    if len(pool) < params.batch_rows:
        raise DataError(
            f"simulate.batch_rows is {params.batch_rows} but the pool holds {len(pool)} rows that no model trains "
            "on: lower simulate.batch_rows, or raise split.pool_size and train again"
        )


def simulate(pool: pd.DataFrame, data: DataParams, params: SimulateParams, seed: int) -> list[tuple[str, pd.DataFrame]]:
    """The control batches then one batch per drifted scenario, as (batch name, frame); names sort in order."""
    check_pool(pool, params)
    rng = np.random.default_rng(seed)
    names = [f"control-{i + 1}" for i in range(params.control_batches)]
    names += [s.name for s in SCENARIOS if s.name != "control"]
    batches = []
    for number, name in enumerate(names, start=1):
        make = scenario(name.split("-")[0]).make
        batches.append((f"{number:03d}-{name}", make(pool, data, params, rng)))
    return batches


def gradual_price_increase(
    pool: pd.DataFrame, data: DataParams, params: SimulateParams, seed: int
) -> list[tuple[str, pd.DataFrame, float]]:
    """A series whose price increase grows linearly from 0 to gradual_max_increase: (name, frame, increase)."""
    check_pool(pool, params)
    rng = np.random.default_rng(seed)
    steps = params.gradual_batches
    series = []
    for step in range(steps):
        increase = params.gradual_max_increase * step / max(steps - 1, 1)
        frame = price_increase(pool, data, params, rng, increase=increase)
        series.append((f"{step + 1:03d}-gradual-{increase:.3f}", frame, increase))
    return series
