"""Read the source table named in params.yaml and give it the declared types.

Problems that make the table unreadable or untyped are raised here with the file and column named; value-level
rules (ranges, domains, null rates) belong to the validation suite.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from optiflow.config import DataParams
from optiflow.data.keys import BOOKKEEPING_COLUMNS
from optiflow.data.schema import resolve_schema
from optiflow.errors import DataError, IntegrityError
from optiflow.io import sha256_file

log = logging.getLogger(__name__)

_EXAMPLES = 3
_OTHER_DELIMITERS = (";", "\t", "|")
_PARQUET_MAGIC = b"PAR1"


def verify_checksum(path: Path, expected: str | None) -> str:
    """Return the file's sha256; raise if params.yaml expects a different one."""
    actual = sha256_file(path)
    if expected and actual != expected.lower():
        raise IntegrityError(
            f"{path}: sha256 is {actual}, but params.yaml data.sha256 expects {expected}. "
            "The file changed; if that is intended, update data.sha256."
        )
    return actual


def read_source(path: Path, fmt: str = "auto") -> pd.DataFrame:
    """Read CSV (optionally compressed) or Parquet, turning library failures into one clear DataError."""
    if not path.is_file():
        raise DataError(f"{path}: data source not found (params.yaml data.source)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    kind = fmt if fmt != "auto" else ("parquet" if path.suffix.lower() in {".parquet", ".pq"} else "csv")
    if kind == "csv" and _starts_with(path, _PARQUET_MAGIC):
        raise DataError(f"{path}: is a Parquet file; name it .parquet or set params.yaml data.format: parquet")
    try:
        frame = pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: no columns to read (empty after decompression)") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: compressed file is truncated or corrupt ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text at byte {exc.start} ({exc.reason}); re-save it as UTF-8") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as {kind}: {exc}") from None
    if frame.empty:
        raise DataError(f"{path}: has a header but no rows")
    if kind == "csv" and frame.shape[1] == 1:
        delimiter = next((d for d in _OTHER_DELIMITERS if d in str(frame.columns[0])), None)
        if delimiter is not None:
            raise DataError(
                f"{path}: read as a single column {str(frame.columns[0])[:60]!r}...: the file looks "
                f"{delimiter!r}-delimited, but Optiflow reads comma-separated CSV; re-save it with commas"
            )
    return frame


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(magic)) == magic


def coerce(frame: pd.DataFrame, data: DataParams, origin: Path, *, labelled: bool = True) -> pd.DataFrame:
    """Keep the declared columns, cast numerics, fill declared gaps; raise naming every missing column.

    ``labelled=False`` types a serving batch that has no target column yet.
    """
    schema = resolve_schema(frame, data)
    sensitive_only = [c for c in data.sensitive_features if c not in schema.features and c not in data.id_columns]
    required = [*([data.target] if labelled else []), *data.id_columns, *schema.features, *sensitive_only]
    missing = [column for column in required if column not in frame.columns]
    if missing:
        extra = sorted(set(frame.columns) - set(required) - set(BOOKKEEPING_COLUMNS))
        hint = f"; columns present but not declared: {extra}" if extra else ""
        raise DataError(f"{origin}: missing required column(s) {missing}{hint}")
    bookkeeping = [column for column in BOOKKEEPING_COLUMNS if column in frame.columns]  # row keys and roles travel
    dropped = sorted(set(frame.columns) - set(required) - set(bookkeeping))
    if dropped:
        log.warning("%s: ignoring undeclared column(s) %s", origin, dropped)

    typed = frame[required + bookkeeping].copy()
    for column in schema.numeric:
        typed[column] = _to_numeric(typed[column], column, origin)
    for column in schema.categorical:
        typed[column] = clean_categorical(typed[column])
    for column, value in data.fill_missing.items():
        if column not in typed.columns:
            raise DataError(f"{origin}: data.fill_missing names {column!r}, which is not a declared column")
        filled = int(typed[column].isna().sum())
        if filled:
            log.info("%s: filled %d missing %s with %r (data.fill_missing)", origin, filled, column, value)
            typed[column] = typed[column].fillna(value)
    return typed.reset_index(drop=True)


def load_dataset(path: Path, data: DataParams) -> tuple[pd.DataFrame, str]:
    """The ingest stage's core: checksum, read, type. Returns the table and the source's sha256."""
    if not path.is_file():
        raise DataError(f"{path}: data source not found (params.yaml data.source)")
    digest = verify_checksum(path, data.sha256)
    return coerce(read_source(path, data.format), data, path), digest


def clean_categorical(series: pd.Series) -> pd.Series:
    """Text categories with surrounding blanks stripped (missing stays missing); numeric codes are kept as they are."""
    if pd.api.types.is_numeric_dtype(series):
        return series
    # one pass in Python: as fast as pandas' string methods on large columns, far faster on the few rows of an API call
    values = series.to_numpy(dtype=object)
    cleaned = [
        np.nan if gone else (value.strip() if isinstance(value, str) else str(value).strip())
        for value, gone in zip(values, pd.isna(values), strict=True)
    ]
    return pd.Series(cleaned, index=series.index, dtype=object, name=series.name)


def parse_numeric(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Values as float (blank -> missing) and a mask of the values that are present but not numbers."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return series.astype(float), pd.Series(False, index=series.index)
    text = series.astype("string").str.strip()
    converted = pd.to_numeric(text.replace("", pd.NA), errors="coerce").astype(float)
    return converted, series.notna() & converted.isna() & text.ne("")


def _to_numeric(series: pd.Series, column: str, origin: Path) -> pd.Series:
    converted, bad = parse_numeric(series)
    if bad.any():
        examples = series[bad].astype(str).unique()[:_EXAMPLES].tolist()
        raise DataError(
            f"{origin}: column {column!r} is declared numeric but {int(bad.sum())} value(s) are not numbers, "
            f"e.g. {examples}"
        )
    return _finite(converted, column, origin)


def _finite(series: pd.Series, column: str, origin: Path) -> pd.Series:
    """Infinity is never a measurement: it breaks scaling and every estimator, so it is refused at the door."""
    infinite = np.isinf(series)
    if infinite.any():
        examples = series[infinite].unique()[:_EXAMPLES].tolist()
        raise DataError(
            f"{origin}: column {column!r} holds {int(infinite.sum())} infinite value(s), e.g. {examples}; "
            "numeric features must be finite (leave a value empty for missing)"
        )
    return series
