"""Stable row keys, and the role a key gives its row: what keeps a row a model trained on away from the rows it is
judged on, in the first run and in every retraining.

A row's key comes from its id columns (``data.id_columns``) when the table has them, else from a hash of its
feature values (the label left out, so the same customer keeps one key whether labelled or not, and a copy whose
label changed later is still the same row). The key is written as a column, ``row_key``, at ingest, and travels with
the row into the splits, the simulated batches and the retraining sets; a frame that already carries keys keeps them.

A source row's role (holdout, test, valid, pool or train) is a pure function of its key: the key hashed with a fixed
salt to a number in [0, 1), cut at the configured shares. The seed does not enter it, so a row keeps its role across
runs, seeds and retrainings, and appending rows to the table moves none of the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from optiflow.config import DataParams, SplitParams

KEY_COLUMN = "row_key"  # the row's stable key (16 hex digits)
ROLE_COLUMN = "row_role"  # a role given explicitly (a retraining set); absent for a source table
BOOKKEEPING_COLUMNS = (KEY_COLUMN, ROLE_COLUMN)  # never features, kept through typing

HOLDOUT, TEST, VALID, POOL, TRAIN = "holdout", "test", "valid", "pool", "train"
ROLES = (HOLDOUT, TEST, VALID, POOL, TRAIN)  # in the order the shares are cut from [0, 1)
TRAINING_ROLES = (TRAIN, VALID)  # what a model learns from (fit, and every choice made on validation)
EVALUATION_ROLES = (TEST, HOLDOUT)  # never learnt from, in any run

_MISSING = "<missing>"
_ROLE_SALT = "optiflow-roles-1"  # 16 bytes, pandas' hash key: fixed, so roles never depend on the seed
_TRAIN_VALID_SALT = "optiflow-tv-2026"  # a second, independent draw (train or valid for a batch row)


def key_columns(frame: pd.DataFrame, data: DataParams) -> list[str]:
    """The columns a key is made of: the id columns, or every column but the label and the bookkeeping."""
    if data.id_columns:
        return list(data.id_columns)
    return [c for c in frame.columns if c != data.target and c not in BOOKKEEPING_COLUMNS]


def row_keys(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One key per row: numbers compared as floats (1 and 1.0 are one value), everything else as text."""
    canonical = pd.DataFrame({column: _canonical(frame[column]).to_numpy() for column in columns})
    hashed = pd.util.hash_pandas_object(canonical, index=False).to_numpy(dtype=np.uint64)
    return pd.Series([f"{value:016x}" for value in hashed], index=frame.index, name=KEY_COLUMN, dtype=object)


def with_keys(frame: pd.DataFrame, data: DataParams) -> pd.DataFrame:
    """``frame`` with its ``row_key`` column: kept when the rows already carry keys, computed otherwise."""
    if KEY_COLUMN in frame.columns:
        return frame
    return frame.assign(**{KEY_COLUMN: row_keys(frame, key_columns(frame, data)).to_numpy()})


def unique_keys(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per key, the last occurrence kept (the newest version of a row); returns it and the rows dropped."""
    kept = frame.drop_duplicates(KEY_COLUMN, keep="last")
    return kept, len(frame) - len(kept)


def key_fraction(keys: pd.Series, salt: str = _ROLE_SALT) -> np.ndarray:
    """Each key as a number in [0, 1), uniform over keys and fixed for a key."""
    hashed = pd.util.hash_pandas_object(keys.astype(str).reset_index(drop=True), index=False, hash_key=salt)
    return hashed.to_numpy(dtype=np.uint64) / float(2**64)


def role_shares(split: SplitParams) -> dict[str, float]:
    """The share of source rows each role takes (train takes what is left)."""
    shares = {
        HOLDOUT: split.holdout_size,
        TEST: split.test_size,
        VALID: split.valid_size,
        POOL: split.pool_size,
    }
    return {**shares, TRAIN: 1.0 - sum(shares.values())}


def source_roles(keys: pd.Series, split: SplitParams) -> np.ndarray:
    """The role of each source row, from its key alone."""
    shares = role_shares(split)
    edges = np.cumsum([shares[role] for role in ROLES[:-1]])
    return np.asarray(ROLES, dtype=object)[np.searchsorted(edges, key_fraction(keys), side="right")]


def train_or_valid(keys: pd.Series, split: SplitParams) -> np.ndarray:
    """Train or valid for rows that may train (older labelled batches), in the configured train : valid ratio."""
    shares = role_shares(split)
    valid_share = shares[VALID] / (shares[VALID] + shares[TRAIN])
    return np.where(key_fraction(keys, _TRAIN_VALID_SALT) < valid_share, VALID, TRAIN).astype(object)


def _canonical(series: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return series.astype(float)
    return series.astype(object).where(series.notna(), _MISSING).astype(str)
