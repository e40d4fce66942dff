"""A larger, realistic table for scale tests: the shipped rows resampled with noise, written in bounded chunks.

Each output row is a real row drawn with replacement (so categorical combinations and the label stay as they were
observed together), with its numbers jittered inside their valid ranges: tenure by a few months (a customer with
tenure 0 stays unbilled), monthly charges by a few percent, and total charges recomputed as tenure x monthly
charges x the source row's own billing ratio, so the relation between the three holds as in the source. Written
chunk by chunk with pyarrow, so memory stays at one chunk whatever the row count; deterministic given the seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from optiflow.errors import ConfigError, DataError
from optiflow.io import atomic_path

log = logging.getLogger(__name__)

TENURE, MONTHLY, TOTAL = "tenure", "monthly_charges", "total_charges"


def jitter_chunk(source: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """`rows` rows resampled from `source` with their tenure, monthly and total charges jittered consistently."""
    for column in (TENURE, MONTHLY, TOTAL):
        if column not in source.columns:
            raise DataError(f"make-large expects the churn table's {column!r} column; it has {list(source.columns)}")
    picked = source.iloc[rng.integers(0, len(source), size=rows)].reset_index(drop=True)
    tenure = picked[TENURE].to_numpy()
    monthly = picked[MONTHLY].to_numpy(dtype=float)
    total = picked[TOTAL].to_numpy(dtype=float)
    max_tenure = int(source[TENURE].max())
    low_monthly, high_monthly = float(source[MONTHLY].min()), float(source[MONTHLY].max())
    billed = tenure > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(billed & np.isfinite(total), total / (tenure * monthly), 1.0)
    new_tenure = np.where(billed, np.clip(tenure + rng.integers(-2, 3, size=rows), 1, max_tenure), 0)
    new_monthly = np.round(np.clip(monthly * (1 + rng.normal(0.0, 0.03, size=rows)), low_monthly, high_monthly), 2)
    new_total = np.where(billed, np.round(new_tenure * new_monthly * ratio, 2), np.nan)
    return picked.assign(
        **{TENURE: new_tenure.astype(picked[TENURE].dtype), MONTHLY: new_monthly, TOTAL: new_total.astype(float)}
    )


def make_large(
    source: pd.DataFrame, output: Path, rows: int, seed: int, chunk_rows: int = 100_000
) -> dict[str, int | str]:
    """Write `rows` resampled rows to `output` (Parquet, one row group per chunk), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows < 1 or chunk_rows < 1:
        raise ConfigError(f"make-large: rows ({rows}) and chunk rows ({chunk_rows}) must be at least 1")
    if output.suffix.lower() not in {".parquet", ".pq"}:
        raise ConfigError(f"{output}: make-large writes Parquet; name the output *.parquet")
    schema = pa.Schema.from_pandas(source.assign(**{TOTAL: source[TOTAL].astype(float)}), preserve_index=False)
    written = 0
    with atomic_path(output) as staging, pq.ParquetWriter(staging, schema, compression="zstd") as writer:
        for index, start in enumerate(range(0, rows, chunk_rows)):
            size = min(chunk_rows, rows - start)
            chunk = jitter_chunk(source, size, np.random.default_rng([seed, index]))
            writer.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=False))
            written += size
    log.info("wrote %d rows to %s in %d chunk(s) of up to %d", written, output, -(-rows // chunk_rows), chunk_rows)
    return {"rows": written, "output": str(output)}
