"""Row keys and the split: each row in the role its key gives it, whatever else is in the table, the seed or the run;
one row per key; roles a retraining set names are kept; the reference comes from the holdout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optiflow.config import DataParams, SplitParams, parse_params
from optiflow.data.keys import KEY_COLUMN, ROLE_COLUMN, key_columns, row_keys, source_roles, with_keys
from optiflow.data.split import labels, split_dataset
from optiflow.errors import DataError
from tests.conftest import shipped_params

DATA = DataParams(source="x.csv", target="churn", positive_label="Yes", negative_label="No")
SPLIT = SplitParams(test_size=0.2, valid_size=0.2, holdout_size=0.2, pool_size=0.1)


def _frame(rows: int = 2000, start: int = 0) -> pd.DataFrame:
    index = np.arange(start, start + rows)
    return pd.DataFrame(
        {
            "x": index.astype(float),
            "plan": np.where(index % 3 == 0, "basic", "pro"),
            "churn": np.where(index % 4 == 0, "Yes", "No"),
        }
    )


def test_a_row_key_ignores_the_label_and_how_numbers_were_typed() -> None:
    frame = _frame(5)
    keys = row_keys(frame, key_columns(frame, DATA))
    assert keys.is_unique and keys.str.fullmatch(r"[0-9a-f]{16}").all()
    relabelled = frame.assign(churn="Yes", x=frame["x"].astype(int))
    assert row_keys(relabelled, key_columns(relabelled, DATA)).equals(keys)
    assert with_keys(frame, DATA)[KEY_COLUMN].equals(keys)
    carried = frame.assign(**{KEY_COLUMN: "k"})
    assert with_keys(carried, DATA) is carried  # keys a frame carries are kept


def test_id_columns_make_the_key_when_declared() -> None:
    data = DATA.model_copy(update={"id_columns": ("customer",)})
    frame = _frame(4).assign(customer=["a", "b", "c", "d"])
    changed = frame.assign(x=-1.0)  # same customers, other values
    assert row_keys(changed, key_columns(changed, data)).equals(row_keys(frame, key_columns(frame, data)))


def test_roles_are_disjoint_near_their_shares_and_follow_the_key_alone() -> None:
    frame = _frame(4000)
    parts = split_dataset(frame, DATA, SPLIT, seed=1)
    sizes = parts.sizes()
    for role, share in (("holdout", 0.2), ("test", 0.2), ("valid", 0.2), ("pool", 0.1), ("train", 0.3)):
        assert sizes[role] == pytest.approx(4000 * share, rel=0.12), role
    keys = {role: set(getattr(parts, role)[KEY_COLUMN]) for role in ("train", "valid", "test", "holdout", "pool")}
    assert sum(map(len, keys.values())) == 4000
    assert all(not (keys[a] & keys[b]) for a in keys for b in keys if a < b)
    # another seed, and a table with rows added and removed: every row shared keeps its role
    other = split_dataset(pd.concat([frame.iloc[500:], _frame(800, start=9000)]), DATA, SPLIT, seed=7)
    for role in keys:
        moved = set(getattr(other, role)[KEY_COLUMN])
        assert keys[role] & set(with_keys(frame.iloc[500:], DATA)[KEY_COLUMN]) <= moved, role


def test_one_row_per_key_the_last_kept() -> None:
    frame = pd.concat([_frame(1000), _frame(50).assign(churn="Yes")], ignore_index=True)  # 50 rows again, relabelled
    parts = split_dataset(frame, DATA, SPLIT, seed=0)
    assert parts.duplicates == 50 and sum(len(getattr(parts, r)) for r in SPLIT_ROLES) == 1000
    everything = pd.concat([getattr(parts, role) for role in SPLIT_ROLES])
    assert (everything.set_index("x").loc[np.arange(50.0), "churn"] == "Yes").all()


SPLIT_ROLES = ("train", "valid", "test", "holdout", "pool")


def test_roles_a_retraining_set_names_are_kept() -> None:
    frame = _frame(400)
    named = frame.assign(**{ROLE_COLUMN: np.where(np.arange(400) < 100, "holdout", "train")})
    named.loc[200:249, ROLE_COLUMN] = "valid"
    named.loc[250:299, ROLE_COLUMN] = "test"
    parts = split_dataset(named, DATA, SPLIT, seed=0)
    assert set(parts.holdout["x"]) == set(range(100)) and len(parts.train) == 200 and parts.pool.empty
    assert ROLE_COLUMN not in parts.train.columns
    with pytest.raises(DataError, match=r"unknown role\(s\) \['somewhere'\]"):
        split_dataset(frame.assign(**{ROLE_COLUMN: "somewhere"}), DATA, SPLIT, seed=0)


def test_reference_is_sampled_from_the_holdout() -> None:
    parts = split_dataset(_frame(4000), DATA, SPLIT.model_copy(update={"reference_rows": 100}), seed=3)
    assert len(parts.reference) == 100 and set(parts.reference[KEY_COLUMN]) <= set(parts.holdout[KEY_COLUMN])


def test_a_role_without_both_classes_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"split holds .* it needs both 'Yes' and 'No'"):
        split_dataset(_frame(8), DATA, SPLIT, seed=0)


def test_shares_must_leave_room_to_train() -> None:
    with pytest.raises(ValueError, match="leaves under 10% for training"):
        SplitParams(test_size=0.3, valid_size=0.3, holdout_size=0.35)


def test_source_roles_are_fixed_by_the_key() -> None:
    keys = with_keys(_frame(50), DATA)[KEY_COLUMN]
    assert (source_roles(keys, SPLIT) == source_roles(keys.iloc[::-1], SPLIT)[::-1]).all()


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
