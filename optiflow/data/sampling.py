"""Seeded row samples, one way each: a plain sample of at most N rows, and a sample stratified on the target.

Every step that looks at fewer rows than it has (drift checks on big batches, SHAP and permutation importance, the
monitoring reference, the tuning and training caps) draws them here, so the same seed always picks the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from optiflow.config import DataParams


def capped_rows(frame: pd.DataFrame, data: DataParams, max_rows: int | None, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows, stratified on the target (seeded); every row, untouched, when under the cap.

    The row cap of tune and train (tune.max_rows, train.max_rows) on tables too big to fit in full."""
    if max_rows is None or len(frame) <= max_rows:
        return frame
    kept, _ = train_test_split(frame, train_size=max_rows, stratify=frame[data.target], random_state=seed)
    return kept.sort_index()


def sample_rows(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of at most ``limit`` rows, their index kept (the frame itself when it is small enough)."""
    if limit is None or len(frame) <= limit:
        return frame
    return frame.sample(n=limit, random_state=np.random.RandomState(seed))
