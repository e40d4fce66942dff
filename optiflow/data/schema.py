"""Which columns feed the model and how each is treated: declared in params.yaml or inferred from dtypes."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from optiflow.config import DataParams
from optiflow.data.keys import BOOKKEEPING_COLUMNS


@dataclass(frozen=True)
class Schema:
    """Which columns feed the model, and how each is treated."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


def resolve_schema(frame: pd.DataFrame, data: DataParams) -> Schema:
    """Declared feature types when params.yaml gives them, otherwise inferred from dtypes."""
    if data.feature_types is not None:
        return Schema(tuple(data.feature_types.numeric), tuple(data.feature_types.categorical))
    excluded = {data.target, *data.id_columns, *BOOKKEEPING_COLUMNS}
    features = [column for column in frame.columns if column not in excluded]
    numeric = tuple(c for c in features if pd.api.types.is_numeric_dtype(frame[c]) and not _is_bool(frame[c]))
    categorical = tuple(c for c in features if c not in numeric)
    return Schema(numeric, categorical)


def _is_bool(series: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(series)
