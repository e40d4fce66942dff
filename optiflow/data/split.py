"""Stratified, seeded train / valid / test split, plus the reference sample that monitoring compares against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from optiflow.config import DataParams, SplitParams
from optiflow.data.sampling import sample_rows


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
    reference = sample_rows(train, split.reference_rows, seed)
    return Splits(*(part.reset_index(drop=True) for part in (train, valid, test, reference)))


def labels(frame: pd.DataFrame, data: DataParams) -> np.ndarray:
    """The target as 0/1, 1 meaning the positive label."""
    return (frame[data.target] == data.positive_label).to_numpy(dtype=np.int64)
