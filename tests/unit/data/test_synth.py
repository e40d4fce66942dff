"""make-large: the resampled table keeps the schema, domains, ranges and relations of its source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from optiflow.data.synth import make_large
from optiflow.errors import ConfigError


@pytest.fixture(scope="module")
def source() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    tenure = rng.integers(0, 73, size=300)
    monthly = np.round(rng.uniform(18.25, 118.75, size=300), 2)
    total = np.where(tenure > 0, np.round(tenure * monthly * rng.uniform(0.9, 1.1, size=300), 2), np.nan)
    return pd.DataFrame(
        {
            "churn": rng.choice(["No", "Yes"], size=300),
            "female": rng.integers(0, 2, size=300),
            "contract": rng.choice(["Month-to-month", "One year", "Two year"], size=300),
            "tenure": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
        }
    )


def test_large_table_keeps_schema_domains_ranges_and_the_billing_relation(source, tmp_path: Path) -> None:
    out = tmp_path / "large.parquet"
    make_large(source, out, rows=2_500, seed=3, chunk_rows=1_000)
    assert pq.ParquetFile(out).metadata.num_row_groups == 3  # written chunk by chunk
    large = pd.read_parquet(out)
    assert len(large) == 2_500 and list(large.columns) == list(source.columns)
    assert (large.dtypes == source.dtypes).all()
    for column in ("churn", "female", "contract"):
        assert set(large[column]) <= set(source[column])
    assert large["tenure"].between(0, source["tenure"].max()).all()
    assert large["monthly_charges"].between(source["monthly_charges"].min(), source["monthly_charges"].max()).all()
    unbilled = large["tenure"] == 0
    assert large.loc[unbilled, "total_charges"].isna().all() and large.loc[~unbilled, "total_charges"].notna().all()
    billed = large[~unbilled]
    ratio = billed["total_charges"] / (billed["tenure"] * billed["monthly_charges"])
    assert ratio.between(0.85, 1.15).all()  # the source rows' own billing ratios (0.9-1.1), up to rounding
    assert abs((large["churn"] == "Yes").mean() - (source["churn"] == "Yes").mean()) < 0.05


def test_large_table_is_deterministic_with_the_seed(source, tmp_path: Path) -> None:
    first, again, other = (tmp_path / f"{name}.parquet" for name in ("a", "b", "c"))
    make_large(source, first, rows=500, seed=5, chunk_rows=200)
    make_large(source, again, rows=500, seed=5, chunk_rows=200)
    make_large(source, other, rows=500, seed=6, chunk_rows=200)
    pd.testing.assert_frame_equal(pd.read_parquet(first), pd.read_parquet(again))
    assert not pd.read_parquet(first).equals(pd.read_parquet(other))


def test_large_table_must_be_parquet(source, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\*\.parquet"):
        make_large(source, tmp_path / "large.csv", rows=10, seed=1)
