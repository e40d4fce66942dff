"""Stratified, seeded train / valid / test split, plus the reference sample that monitoring compares against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from optiflow.config import DataParams, SplitParams


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    reference: pd.DataFrame


def split_dataset(frame: pd.DataFrame, data: DataParams, split: SplitParams, seed: int) -> Splits:
    """Test first, then valid out of the rest, both stratified on the target so class shares match."""
    rest, test = train_test_split(frame, test_size=split.test_size, stratify=frame[data.target], random_state=seed)
    valid_share = split.valid_size / (1.0 - split.test_size)
    train, valid = train_test_split(rest, test_size=valid_share, stratify=rest[data.target], random_state=seed)
    reference_rows = min(split.reference_rows, len(train))
    reference = train.sample(n=reference_rows, random_state=np.random.RandomState(seed))
    return Splits(*(part.reset_index(drop=True) for part in (train, valid, test, reference)))


def labels(frame: pd.DataFrame, data: DataParams) -> np.ndarray:
    """The target as 0/1, 1 meaning the positive label."""
    return (frame[data.target] == data.positive_label).to_numpy(dtype=np.int64)


def capped_rows(frame: pd.DataFrame, data: DataParams, max_rows: int | None, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows, stratified on the target (seeded); every row, untouched, when under the cap.

    The row cap of tune and train (tune.max_rows, train.max_rows) on tables too big to fit in full."""
    if max_rows is None or len(frame) <= max_rows:
        return frame
    kept, _ = train_test_split(frame, train_size=max_rows, stratify=frame[data.target], random_state=seed)
    return kept.sort_index()
