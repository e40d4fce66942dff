"""What scoring needs besides the fitted model, fixed at registration and shipped (checksummed) with it: the feature
columns and their training dtypes (to type incoming rows exactly as training did), a reference value per feature
(for occlusion reason codes) and the decision threshold chosen at evaluate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from optiflow.io import read_json, write_json

SPEC_FILE = "serving.json"


@dataclass(frozen=True)
class ServingSpec:
    features: tuple[str, ...]
    dtypes: dict[str, str]  # training dtype per feature, e.g. "float64", "int64", "object"
    reference: dict[str, Any]  # median (numeric) or most frequent value (otherwise) of the reference rows
    threshold: float  # label = probability >= threshold

    @classmethod
    def from_frame(cls, reference: pd.DataFrame, features: tuple[str, ...], threshold: float) -> ServingSpec:
        values = {}
        for column in features:
            series = reference[column].dropna()
            if pd.api.types.is_float_dtype(series):
                values[column] = float(series.median())
            else:
                values[column] = series.mode().sort_values().iloc[0]
                values[column] = values[column].item() if hasattr(values[column], "item") else values[column]
        dtypes = {column: str(reference[column].dtype) for column in features}
        return cls(tuple(features), dtypes, values, float(threshold))

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> ServingSpec:
        raw = read_json(path)
        return cls(tuple(raw["features"]), raw["dtypes"], raw["reference"], float(raw["threshold"]))

    def numeric(self, column: str) -> bool:
        return self.dtypes[column].startswith(("float", "int", "uint"))
