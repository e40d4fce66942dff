"""Data tests: the shipped table meets its own contract, and the split built from it keeps the label shares.

These read the real file (7,043 rows) through the same suite ingest runs, so a change to the data or to the rules
in params.yaml that would stop `make run` at ingest fails here first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optiflow.config import load_config
from optiflow.data.ingest import load_dataset
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels, split_dataset
from optiflow.data.validation import LEAKAGE, validate_frame
from tests.conftest import REPO, SHIPPED_DATA


@pytest.fixture(scope="module")
def shipped() -> tuple:
    config = load_config(REPO / "params.yaml")
    frame, digest = load_dataset(config.source, config.params.data)
    return config.params, frame, digest


def test_the_shipped_table_passes_its_training_suite(shipped) -> None:
    params, frame, digest = shipped
    report = validate_frame(frame, resolve_schema(frame, params.data), params.data, params.validation, "shipped")
    assert report.success, report.failure_message()
    assert digest == params.data.sha256 and report.rows == len(frame) >= params.validation.min_rows
    leakage = [check for check in report.checks if check.expectation == LEAKAGE]
    assert len(leakage) == len(resolve_schema(frame, params.data).features), "every feature was checked for leakage"


def test_every_declared_column_is_there_typed_and_nothing_else(shipped) -> None:
    params, frame, _ = shipped
    schema = resolve_schema(frame, params.data)
    assert set(frame.columns) == {params.data.target, *params.data.id_columns, *schema.features}
    assert all(pd.api.types.is_float_dtype(frame[column]) for column in schema.numeric)
    assert set(frame[params.data.target]) == {params.data.positive_label, params.data.negative_label}
    assert set(params.data.sensitive_features) <= set(frame.columns)


def test_the_raw_file_holds_only_the_gaps_fill_missing_names(shipped) -> None:
    """The raw file's missing values are exactly the unbilled customers data.fill_missing covers."""
    params, frame, _ = shipped
    raw = pd.read_csv(SHIPPED_DATA)
    gaps = raw.isna().sum()
    assert set(gaps[gaps > 0].index) == set(params.data.fill_missing)
    assert not frame.isna().any().any()


def test_the_split_keeps_label_shares_and_shares_no_row(shipped) -> None:
    """Roles come from hashed keys, not a stratified draw: each role's churn share is within 3 standard errors of
    the table's, and every row (one per key) is in exactly one role."""
    params, frame, _ = shipped
    splits = split_dataset(frame, params.data, params.split, params.seed)
    whole = labels(frame, params.data).mean()
    parts = [getattr(splits, role) for role in ("train", "valid", "test", "holdout", "pool")]
    for part in parts:
        assert abs(labels(part, params.data).mean() - whole) < 3 * np.sqrt(whole * (1 - whole) / len(part))
    keys = [set(part["row_key"]) for part in parts]
    assert sum(len(k) for k in keys) == len(set.union(*keys)) == len(frame) - splits.duplicates
    assert splits.duplicates == 40  # rows whose feature values repeat another row's


def test_shipped_data_loads_typed_with_missing_charges_filled(shipped) -> None:
    params, frame, digest = shipped
    assert frame.shape == (7043, 20)
    assert digest == params.data.sha256
    raw = pd.read_csv(SHIPPED_DATA)
    unbilled = raw["total_charges"].isna()
    assert unbilled.sum() == 11 and (raw.loc[unbilled, "tenure"] == 0).all()
    assert frame["total_charges"].notna().all()
    assert (frame.loc[unbilled, "total_charges"] == 0.0).all()
    assert frame["tenure"].dtype == float and frame["contract"].dtype == object
