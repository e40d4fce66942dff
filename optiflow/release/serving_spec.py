"""What scoring needs besides the fitted model, fixed at registration and shipped (checksummed) with it: the feature
columns and their training dtypes (to type incoming rows exactly as training did), a reference value per feature
(for occlusion reason codes), the decision threshold chosen at evaluate, the label values, and the row contract.

The row contract (``RowContract``, checked by ``check_rows``) is the ONE implementation of "may this row be scored":
`optiflow predict`, `optiflow serve-api` and the registered model's own ``predict`` (so `mlflow models serve`,
`mlflow models predict` and ``mlflow.pyfunc.load_model``) all run it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optiflow.config import DataParams, ValidateParams
from optiflow.data.ingest import clean_categorical, parse_numeric
from optiflow.errors import DataError
from optiflow.io import read_json, write_json

SPEC_FILE = "serving.json"
PROBABILITY, LABEL, REASON = "probability", "label", "reason"  # scored output columns; why a row was rejected


@dataclass(frozen=True)
class RowContract:
    """The rules a row must pass to be scored, taken from the settings at registration (`data.fill_missing` and the
    `validate:` null, range and domain rules): a missing value is filled or refused, a number must be finite and in
    range, a category must be one of the allowed values."""

    fill_missing: dict[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()  # features where a missing value (after filling) is refused
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    domains: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, data: DataParams, rules: ValidateParams, features: Iterable[str]) -> RowContract:
        features = tuple(features)
        return cls(
            fill_missing={k: v for k, v in data.fill_missing.items() if k in features},
            required=tuple(c for c in features if rules.null_fraction.get(c, rules.max_null_fraction) == 0.0),
            ranges={k: tuple(v) for k, v in rules.ranges.items() if k in features},
            domains={k: tuple(v) for k, v in rules.domains.items() if k in features},
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RowContract:
        return cls(
            dict(raw.get("fill_missing", {})),
            tuple(raw.get("required", ())),
            {k: tuple(v) for k, v in raw.get("ranges", {}).items()},
            {k: tuple(v) for k, v in raw.get("domains", {}).items()},
        )


@dataclass(frozen=True)
class ServingSpec:
    features: tuple[str, ...]
    dtypes: dict[str, str]  # training dtype per feature, e.g. "float64", "int64", "object"
    reference: dict[str, Any]  # median (numeric) or most frequent value (otherwise) of the reference rows
    threshold: float  # label = probability >= threshold
    labels: tuple[Any, Any] = (1, 0)  # (positive, negative) label values, as in the training table
    contract: RowContract = field(default_factory=RowContract)  # versions registered before it ship none: no rule

    @classmethod
    def from_frame(
        cls,
        reference: pd.DataFrame,
        features: tuple[str, ...],
        threshold: float,
        data: DataParams | None = None,
        rules: ValidateParams | None = None,
    ) -> ServingSpec:
        values = {}
        for column in features:
            series = reference[column].dropna()
            if pd.api.types.is_float_dtype(series):
                values[column] = float(series.median())
            else:
                values[column] = series.mode().sort_values().iloc[0]
                values[column] = values[column].item() if hasattr(values[column], "item") else values[column]
        dtypes = {column: str(reference[column].dtype) for column in features}
        labels = (data.positive_label, data.negative_label) if data is not None else (1, 0)
        contract = RowContract.from_settings(data, rules, features) if data and rules else RowContract()
        return cls(tuple(features), dtypes, values, float(threshold), labels, contract)

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> ServingSpec:
        raw = read_json(path)
        return cls(
            tuple(raw["features"]),
            raw["dtypes"],
            raw["reference"],
            float(raw["threshold"]),
            tuple(raw.get("labels", (1, 0))),
            RowContract.from_dict(raw.get("contract", {})),
        )

    def numeric(self, column: str) -> bool:
        return self.dtypes[column].startswith(("float", "int", "uint"))

    def label_of(self, probability: np.ndarray) -> np.ndarray:
        positive, negative = self.labels
        return np.where(probability >= self.threshold, positive, negative).astype(object)


def check_columns(spec: ServingSpec, columns: Iterable[str], origin: str = "input") -> None:
    """Every feature the model needs is there (extra columns are ignored)."""
    present = set(columns)
    missing = [column for column in spec.features if column not in present]
    if missing:
        raise DataError(f"{origin}: missing required column(s) {missing}; the model needs {list(spec.features)}")


def check_rows(frame: pd.DataFrame, spec: ServingSpec, contract: RowContract) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows typed as at training, rejects with the input values and a ``reason`` naming every failure).

    Accepts what clients naturally send: numbers as ints, floats or numeric text, categories as text or codes,
    missing values as None/NaN/blank. Works on whole columns (numpy) and builds reason texts only for failing rows:
    it runs once per chunk in batch scoring and once per micro-batch in the API, where its fixed cost matters.
    """
    check_columns(spec, frame.columns)
    failures: list[tuple[np.ndarray, Callable[[np.ndarray], list[str]]]] = []
    columns: dict[str, np.ndarray] = {}
    for column in spec.features:
        raw = frame[column]
        if spec.numeric(column):
            parsed, not_number = parse_numeric(raw)
            values, not_number = parsed.to_numpy(dtype=float, copy=True), not_number.to_numpy()
            if not_number.any():
                failures.append((not_number, _describe(column, raw, "not a number ({!r})")))
            infinite = np.isinf(values)
            if infinite.any():  # never a measurement, whatever validate.ranges says; it would break the model
                failures.append((infinite, _describe(column, values, "{} is not a finite number")))
        else:
            values, not_number = clean_categorical(raw).to_numpy(dtype=object, copy=True), None
        absent = pd.isna(values)
        if column in contract.fill_missing and absent.any():
            values[absent] = contract.fill_missing[column]
            absent = pd.isna(values)
        if not_number is not None:
            absent &= ~not_number
        if column in contract.required and absent.any():
            failures.append((absent, lambda rows, column=column: [f"{column}: missing"] * len(rows)))
        if column in contract.ranges:
            low, high = contract.ranges[column]
            with np.errstate(invalid="ignore"):
                below = (values < low) if low is not None else False
                outside = below | ((values > high) if high is not None else False)
            outside = np.asarray(outside, dtype=bool) & ~absent
            if spec.numeric(column):
                outside &= ~np.isinf(values)  # reported once, as not finite
            if outside.any():
                failures.append((outside, _describe(column, values, "{} outside " + f"[{low}, {high}]")))
        if column in contract.domains:
            unknown = ~absent & ~pd.isna(values) & ~pd.Series(values).isin(contract.domains[column]).to_numpy()
            if unknown.any():
                failures.append((unknown, _describe(column, values, "{!r} not in the allowed values", text=True)))
        columns[column] = values
    rejected = np.zeros(len(frame), dtype=bool)
    for mask, _ in failures:
        rejected |= mask
    good = pd.DataFrame({column: values[~rejected] for column, values in columns.items()}, index=frame.index[~rejected])
    for column, dtype in spec.dtypes.items():
        if dtype.startswith(("int", "uint")) and not good[column].isna().any():
            good[column] = good[column].astype(dtype)
    reasons: dict[int, list[str]] = {}
    for mask, describe in failures:
        positions = np.flatnonzero(mask)
        for position, text in zip(positions.tolist(), describe(positions), strict=True):
            reasons.setdefault(position, []).append(text)
    rejects = frame[rejected].astype("string")
    rejects[REASON] = ["; ".join(reasons[position]) for position in np.flatnonzero(rejected).tolist()]
    return good, rejects


def _describe(column: str, values: Any, template: str, text: bool = False) -> Callable[[np.ndarray], list[str]]:
    """Reason texts for the failing positions of one column, built only when some row fails."""
    array = values.to_numpy() if isinstance(values, pd.Series) else values

    def describe(positions: np.ndarray) -> list[str]:
        return [f"{column}: " + template.format(str(value) if text else value) for value in array[positions]]

    return describe
