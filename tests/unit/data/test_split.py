from __future__ import annotations

import pandas as pd

from optiflow.config import parse_params
from optiflow.data.split import labels, split_dataset
from tests.conftest import shipped_params


def _frame(rows: int = 1000) -> pd.DataFrame:
    return pd.DataFrame({"x": range(rows), "churn": ["Yes" if i % 4 == 0 else "No" for i in range(rows)]})


def test_split_is_stratified_disjoint_and_seeded() -> None:
    params = parse_params(shipped_params())
    frame = _frame()
    parts = split_dataset(frame, params.data, params.split, seed=1)
    assert (len(parts.train), len(parts.valid), len(parts.test)) == (600, 200, 200)
    for part in (parts.train, parts.valid, parts.test):
        assert labels(part, params.data).mean() == 0.25
    ids = [set(p["x"]) for p in (parts.train, parts.valid, parts.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set(parts.reference["x"]) <= ids[0]
    assert len(parts.reference) == min(params.split.reference_rows, len(parts.train))
    again = split_dataset(frame, params.data, params.split, seed=1)
    other = split_dataset(frame, params.data, params.split, seed=2)
    assert again.test.equals(parts.test) and not other.test.equals(parts.test)


def test_labels_map_positive_label_to_one() -> None:
    params = parse_params(shipped_params())
    assert labels(pd.DataFrame({"churn": ["Yes", "No", "No"]}), params.data).tolist() == [1, 0, 0]


def test_row_cap_keeps_label_shares_and_leaves_small_frames_untouched() -> None:
    from optiflow.data.sampling import capped_rows

    params = parse_params(shipped_params())
    frame = _frame(1000)
    capped = capped_rows(frame, params.data, 200, seed=3)
    assert len(capped) == 200 and labels(capped, params.data).mean() == 0.25
    assert capped.index.is_monotonic_increasing and capped.equals(capped_rows(frame, params.data, 200, seed=3))
    assert capped_rows(frame, params.data, None, seed=3) is frame
    assert capped_rows(frame, params.data, 5000, seed=3) is frame
