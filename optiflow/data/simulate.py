"""Realistic labelled batches drawn from the pool (split.pool_size): rows set aside at the split that no model trains
on or is judged on, each batch drifted in one documented way.

Every batch is drawn without replacement from the pool, so a batch never holds a row twice, and a batch larger than
the pool is refused; batches are drawn independently, so two batches may share rows (a customer seen again next
month). The rows keep their ``row_key``: the retraining set keeps one row per key and never lets a key that
evaluates also train. A control batch is what undrifted production data looks like; each scenario (params.yaml
`simulate.scenarios`, or derived from the data when none are set) changes what it names, and keeps every value
inside the validation suite unless the scenario is about broken data. Three kinds cover the usual shifts: `scale`
multiplies a numeric column (a price rise, a unit change) and may move labels with it, `mix` makes one category a
given share of the batch, `segment` makes the rows matching a condition a given share.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd

from optiflow.config import DataParams, Scenario, SimulateParams
from optiflow.data.schema import resolve_schema
from optiflow.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CONTROL = "control"
DERIVED_INCREASE = 1.25  # derived scale scenario: the busiest numeric column rises 25%
DERIVED_SHARE = 0.6  # derived mix and segment scenarios: the share they take of the batch
MAX_MIX_LEVELS = 20  # a derived mix scenario uses a categorical column with at most this many values


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


def matches(frame: pd.DataFrame, where: dict) -> pd.Series:
    """Rows meeting every condition of ``where``: a value (equality) or a [low, high] range (either end open)."""
    mask = pd.Series(True, index=frame.index)
    for column, condition in where.items():
        if isinstance(condition, tuple):
            low, high = condition
            values = pd.to_numeric(frame[column], errors="coerce")
            mask &= (values >= low if low is not None else True) & (values <= high if high is not None else True)
        else:
            mask &= frame[column] == condition
    return mask


def make_batch(
    scenario: Scenario | None,
    frame: pd.DataFrame,
    data: DataParams,
    rows: int,
    rng: np.random.Generator,
    factor: float | None = None,
) -> pd.DataFrame:
    """One batch of ``rows`` rows: undrifted for ``scenario`` None, else drifted as the scenario says (``factor``
    overrides a scale scenario's, for the gradual series; its labels move in proportion)."""
    if scenario is None:
        return draw(frame, rows, rng)
    if scenario.kind == "scale":
        return _scale(scenario, frame, data, rows, rng, scenario.factor if factor is None else factor)
    what = f"{scenario.column} = {scenario.value!r}" if scenario.kind == "mix" else scenario.name
    return draw_mix(frame, scenario_rows(scenario, frame), scenario.share, rows, rng, what)


def scenario_rows(scenario: Scenario, frame: pd.DataFrame) -> np.ndarray:
    """Which rows a mix or segment scenario raises to its share of the batch."""
    if scenario.kind == "mix":
        return (frame[scenario.column] == scenario.value).to_numpy()
    return matches(frame, scenario.where).to_numpy()


def _scale(
    scenario: Scenario, frame: pd.DataFrame, data: DataParams, rows: int, rng: np.random.Generator, factor: float
) -> pd.DataFrame:
    """The column multiplied by ``factor``; with `relabel`, that share of the negative rows matching `where` turns
    positive, scaled by how far ``factor`` goes compared with the scenario's own (a price rise makes the customers
    free to leave churn, in proportion to the rise)."""
    batch = draw(frame, rows, rng)
    batch[scenario.column] = batch[scenario.column] * factor
    if scenario.relabel is not None:
        strength = (factor - 1.0) / (scenario.factor - 1.0) if scenario.factor != 1.0 else 1.0
        exposed = matches(batch, scenario.where) & (batch[data.target] == data.negative_label)
        moved = exposed & (rng.random(len(batch)) < min(max(scenario.relabel * strength, 0.0), 1.0))
        batch.loc[moved, data.target] = data.positive_label
    return batch


def scenarios(frame: pd.DataFrame, data: DataParams, params: SimulateParams) -> tuple[Scenario, ...]:
    """The configured scenarios, or those derived from the data when none are configured."""
    return params.scenarios if params.scenarios is not None else derive_scenarios(frame, data)


def derive_scenarios(frame: pd.DataFrame, data: DataParams) -> tuple[Scenario, ...]:
    """Scenarios fitted to this table's own columns: its busiest numeric column rises 25%; the rarest value of a
    categorical column (at most 20 values) becomes 60% of the batch; rows in the lowest quarter of the busiest
    numeric column become 60% of it. A table without such columns gets fewer scenarios."""
    schema = resolve_schema(frame, data)
    numeric = sorted(schema.numeric, key=lambda column: -frame[column].nunique())
    categorical = [c for c in schema.categorical if 2 <= frame[c].nunique() <= MAX_MIX_LEVELS]
    derived = []
    if numeric:
        column = numeric[0]
        derived.append(Scenario(name=f"{_slug(column)}_up", kind="scale", column=column, factor=DERIVED_INCREASE))
    if categorical:
        column = max(categorical, key=lambda c: frame[c].nunique())
        rarest = frame[column].value_counts().index[-1]
        value = rarest.item() if hasattr(rarest, "item") else rarest
        derived.append(Scenario(name=f"{_slug(column)}_mix", kind="mix", column=column, value=value, share=0.6))
    if numeric:
        column = numeric[0]
        low = float(frame[column].quantile(0.25))
        derived.append(
            Scenario(name=f"{_slug(column)}_low", kind="segment", where={column: (None, low)}, share=DERIVED_SHARE)
        )
    return tuple(derived)


def check_pool(pool: pd.DataFrame, params: SimulateParams) -> None:
    """The pool must hold a whole batch: rows are never drawn twice into one batch."""
    if len(pool) < params.batch_rows:
        raise DataError(
            f"simulate.batch_rows is {params.batch_rows} but the pool holds {len(pool)} rows that no model trains "
            "on: lower simulate.batch_rows, or raise split.pool_size and train again"
        )


def simulate(pool: pd.DataFrame, data: DataParams, params: SimulateParams, seed: int) -> list[tuple[str, pd.DataFrame]]:
    """The control batches then one batch per scenario, as (batch name, frame); names sort in order."""
    check_pool(pool, params)
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, Scenario | None]] = [(f"{CONTROL}-{i + 1}", None) for i in range(params.control_batches)]
    plan += [(scenario.name, scenario) for scenario in scenarios(pool, data, params)]
    return [
        (f"{number:03d}-{name}", make_batch(scenario, pool, data, params.batch_rows, rng))
        for number, (name, scenario) in enumerate(plan, start=1)
    ]


def gradual_series(
    pool: pd.DataFrame, data: DataParams, params: SimulateParams, seed: int
) -> list[tuple[str, pd.DataFrame, float]]:
    """A series whose scale scenario grows linearly from no change to 1 + gradual_max_increase: (name, frame,
    increase). The scenario is simulate.gradual_scenario, else the first scale scenario."""
    check_pool(pool, params)
    chosen = [s for s in scenarios(pool, data, params) if s.kind == "scale"]
    if params.gradual_scenario is not None:
        chosen = [s for s in chosen if s.name == params.gradual_scenario]
    if not chosen:
        wanted = params.gradual_scenario
        raise ConfigError(f"no scale scenario named {wanted!r} for the gradual series (simulate.scenarios)")
    rng = np.random.default_rng(seed)
    steps = params.gradual_batches
    series = []
    for step in range(steps):
        increase = params.gradual_max_increase * step / max(steps - 1, 1)
        frame = make_batch(chosen[0], pool, data, params.batch_rows, rng, factor=1.0 + increase)
        series.append((f"{step + 1:03d}-gradual-{increase:.3f}", frame, increase))
    return series


def _slug(column: str) -> str:
    """A column name as a file-name-safe part of a batch name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", column).strip("_").lower() or "column"
