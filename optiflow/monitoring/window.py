"""The retraining set: the source table and the labelled batches of the window policy, each row given the role it
may play, so that no row a model is judged on was ever learnt from.

- Source rows keep the role their key gives them (optiflow.data.keys): test and holdout rows never train, in any
  retraining; pool rows (set aside for simulated batches) are left out.
- Labelled batches are split by time: the newest one only evaluates (it joins the holdout, where the challenger
  meets the champion); older ones may train (train or valid, by key).
- Every key appears once: a key that evaluates anywhere is removed from every part that trains, then the newest
  version of each remaining row is kept.

The champion may still have learnt from some evaluation rows (a recurring key, or a retraining whose window saw
them); the release compares on the rows its own record of learnt keys excludes (optiflow.release.promotion).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from optiflow.config import DataParams, SplitParams
from optiflow.data.keys import (
    EVALUATION_ROLES,
    HOLDOUT,
    KEY_COLUMN,
    ROLE_COLUMN,
    TRAINING_ROLES,
    source_roles,
    train_or_valid,
    with_keys,
)
from optiflow.errors import DataError


@dataclass(frozen=True, eq=False)
class RetrainingSet:
    frame: pd.DataFrame  # the rows, with row_key and row_role
    evaluation_batch: str  # the newest labelled batch: it only evaluates
    training_batches: tuple[str, ...]  # older labelled batches that may train
    rows_by_role: dict[str, int]
    evaluation_keys_removed: int  # rows that would have trained on a key that evaluates
    duplicates_removed: int  # older copies of a row whose newer copy was kept

    def summary(self) -> dict[str, object]:
        return {
            "evaluation_batch": self.evaluation_batch,
            "training_batches": list(self.training_batches),
            "rows": len(self.frame),
            "rows_by_role": self.rows_by_role,
            "evaluation_keys_removed": self.evaluation_keys_removed,
            "duplicates_removed": self.duplicates_removed,
        }


def retraining_set(
    source: pd.DataFrame,
    batches: Sequence[tuple[str, pd.DataFrame]],
    data: DataParams,
    split: SplitParams,
    include_training: bool,
) -> RetrainingSet:
    """The retraining rows and their roles: the source table's test and holdout rows (always: they only evaluate),
    its train and valid rows when the window includes the training data, and the window's labelled ``batches``,
    oldest first (the last one evaluates)."""
    if not batches:
        raise DataError("the retraining window holds no labelled batch to evaluate on")
    *older, (newest_id, newest) = batches
    keyed = with_keys(source, data)
    roles = source_roles(keyed[KEY_COLUMN], split)
    kept = (*EVALUATION_ROLES, *(TRAINING_ROLES if include_training else ()))  # pool rows never: they are the future
    parts = [keyed.assign(**{ROLE_COLUMN: roles})[pd.Series(roles).isin(kept).to_numpy()]]
    for _, batch in older:
        keyed = with_keys(batch, data)
        parts.append(keyed.assign(**{ROLE_COLUMN: train_or_valid(keyed[KEY_COLUMN], split)}))
    parts.append(with_keys(newest, data).assign(**{ROLE_COLUMN: HOLDOUT}))
    columns = list(parts[-1].columns)
    combined = pd.concat([part[columns] for part in parts], ignore_index=True)
    evaluates = combined[ROLE_COLUMN].isin(EVALUATION_ROLES)
    leaking = ~evaluates & combined[KEY_COLUMN].isin(set(combined.loc[evaluates, KEY_COLUMN]))
    kept = combined[~leaking]
    unique = kept.drop_duplicates(KEY_COLUMN, keep="last").reset_index(drop=True)
    if not unique[ROLE_COLUMN].isin(TRAINING_ROLES).any():
        raise DataError(
            "the retraining window leaves no row to train on: the newest labelled batch only evaluates; include the "
            "training data (monitor.window all or training_plus_labelled) or raise monitor.last_k"
        )
    return RetrainingSet(
        frame=unique,
        evaluation_batch=newest_id,
        training_batches=tuple(identifier for identifier, _ in older),
        rows_by_role={role: int(count) for role, count in unique[ROLE_COLUMN].value_counts().sort_index().items()},
        evaluation_keys_removed=int(leaking.sum()),
        duplicates_removed=len(kept) - len(unique),
    )
