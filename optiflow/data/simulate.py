"""Realistic labelled batches drawn from the held-out test split, each drifted in one documented way.

The model never saw these rows, so a control batch is what undrifted production data looks like; each scenario
changes what its name says (and what follows from it), and keeps every value inside the validation suite unless
the scenario is about broken data. Written for the churn table: scenarios name its columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from optiflow.config import DataParams, SimulateParams


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    make: Callable[[pd.DataFrame, DataParams, SimulateParams, np.random.Generator], pd.DataFrame]


def draw(frame: pd.DataFrame, rows: int, rng: np.random.Generator, weights: np.ndarray | None = None) -> pd.DataFrame:
    """``rows`` rows of ``frame``: without replacement when it has enough and no weights, otherwise with."""
    replace = weights is not None or rows > len(frame)
    probabilities = None if weights is None else weights / weights.sum()
    index = rng.choice(len(frame), size=rows, replace=replace, p=probabilities)
    return frame.iloc[index].reset_index(drop=True)


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
    share = params.contract_month_to_month
    weights = np.where(monthly, share / max(monthly.sum(), 1), (1.0 - share) / max((~monthly).sum(), 1))
    return draw(frame, params.batch_rows, rng, weights)


def new_segment(
    frame: pd.DataFrame, data: DataParams, params: SimulateParams, rng: np.random.Generator
) -> pd.DataFrame:
    """A wave of new fiber customers (tenure up to 6 months) makes up the given share of the batch."""
    segment = frame[(frame["internet_service"] == "Fiber optic") & (frame["tenure"] <= 6)]
    rest = frame.drop(segment.index)
    rows_in_segment = round(params.batch_rows * params.segment_share)
    parts = [draw(segment, rows_in_segment, rng), draw(rest, params.batch_rows - rows_in_segment, rng)]
    return pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=int(rng.integers(2**31)))


def broken_units(
    frame: pd.DataFrame, data: DataParams, params: SimulateParams, rng: np.random.Generator
) -> pd.DataFrame:
    """An upstream change reports tenure in years instead of months: still inside the validation range."""
    batch = draw(frame, params.batch_rows, rng)
    batch["tenure"] = (batch["tenure"] / 12.0).round(2)
    return batch


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("control", "undrifted rows of the held-out test split", control),
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


def simulate(test: pd.DataFrame, data: DataParams, params: SimulateParams, seed: int) -> list[tuple[str, pd.DataFrame]]:
    """The control batches then one batch per drifted scenario, as (batch name, frame); names sort in order."""
    rng = np.random.default_rng(seed)
    names = [f"control-{i + 1}" for i in range(params.control_batches)]
    names += [s.name for s in SCENARIOS if s.name != "control"]
    batches = []
    for number, name in enumerate(names, start=1):
        make = scenario(name.split("-")[0]).make
        batches.append((f"{number:03d}-{name}", make(test, data, params, rng)))
    return batches


def gradual_price_increase(
    test: pd.DataFrame, data: DataParams, params: SimulateParams, seed: int
) -> list[tuple[str, pd.DataFrame, float]]:
    """A series whose price increase grows linearly from 0 to gradual_max_increase: (name, frame, increase)."""
    rng = np.random.default_rng(seed)
    steps = params.gradual_batches
    series = []
    for step in range(steps):
        increase = params.gradual_max_increase * step / max(steps - 1, 1)
        frame = price_increase(test, data, params, rng, increase=increase)
        series.append((f"{step + 1:03d}-gradual-{increase:.3f}", frame, increase))
    return series
