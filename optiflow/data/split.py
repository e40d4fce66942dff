"""The split: one row per key, each row in the role its key gives it (train / valid / test / holdout / pool), and the
monitoring reference sampled from the holdout, whose predictions are out of sample.

A retraining set names each row's role itself (``row_role``, written by optiflow.monitoring.window); the split then
keeps those roles, so a newest batch that evaluates is never split into training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from optiflow.config import DataParams, SplitParams
from optiflow.data.keys import (
    HOLDOUT,
    KEY_COLUMN,
    ROLE_COLUMN,
    ROLES,
    TEST,
    TRAIN,
    VALID,
    source_roles,
    unique_keys,
    with_keys,
)
from optiflow.data.sampling import sample_rows
from optiflow.errors import DataError

# Roles a model is fitted, chosen or judged on: each must hold both classes.
_NEEDS_BOTH_CLASSES = (TRAIN, VALID, TEST, HOLDOUT)


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    holdout: pd.DataFrame
    pool: pd.DataFrame
    reference: pd.DataFrame
    duplicates: int = 0  # rows dropped because another row had the same key

    def sizes(self) -> dict[str, int]:
        return {role: len(getattr(self, role)) for role in (*ROLES, "reference")}


def split_dataset(frame: pd.DataFrame, data: DataParams, split: SplitParams, seed: int) -> Splits:
    """Each row (one per key, the last kept) in the role its key gives it, or the role ``row_role`` names."""
    keyed, duplicates = unique_keys(with_keys(frame, data))
    if ROLE_COLUMN in keyed.columns:
        roles = keyed[ROLE_COLUMN].to_numpy(dtype=object)
        unknown = sorted(set(roles) - set(ROLES))
        if unknown:
            raise DataError(f"column {ROLE_COLUMN!r} holds unknown role(s) {unknown}; roles: {list(ROLES)}")
        keyed = keyed.drop(columns=ROLE_COLUMN)
    else:
        roles = source_roles(keyed[KEY_COLUMN], split)
    parts = {role: keyed[roles == role].reset_index(drop=True) for role in ROLES}
    for role in _NEEDS_BOTH_CLASSES:
        classes = set(parts[role][data.target].unique())
        if len(classes) < 2:
            raise DataError(
                f"the {role} split holds {len(parts[role])} row(s) of class(es) {sorted(map(str, classes))}: it needs "
                f"both {data.positive_label!r} and {data.negative_label!r}; the table is too small for the split "
                "shares (split.*_size)"
            )
    reference = sample_rows(parts[HOLDOUT], split.reference_rows, seed).reset_index(drop=True)
    return Splits(**{role: parts[role] for role in ROLES}, reference=reference, duplicates=duplicates)


def labels(frame: pd.DataFrame, data: DataParams) -> np.ndarray:
    """The target as 0/1, 1 meaning the positive label."""
    return (frame[data.target] == data.positive_label).to_numpy(dtype=np.int64)
