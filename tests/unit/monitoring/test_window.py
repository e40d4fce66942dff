"""The retraining set after three labelled batches: no key both trains and evaluates, the frozen holdout never
trains, the newest batch only evaluates, and the champion is scored only on rows it never learnt from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optiflow.config import DataParams, SplitParams, parse_params
from optiflow.data.keys import KEY_COLUMN, ROLE_COLUMN, source_roles, with_keys
from optiflow.data.split import split_dataset
from optiflow.errors import DataError
from optiflow.monitoring.window import retraining_set
from optiflow.release.promotion import ChampionRead, compare_with_champion
from tests.conftest import shipped_params

DATA = DataParams(source="x.csv", target="churn", positive_label="Yes", negative_label="No")
SPLIT = SplitParams(test_size=0.15, valid_size=0.15, holdout_size=0.2, pool_size=0.2)
PARAMS = parse_params({**shipped_params(), "split": SPLIT.model_dump()})


def _table(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    churn = np.where(rng.uniform(size=rows) < 1 / (1 + np.exp(-2 * x)), "Yes", "No")
    return pd.DataFrame({"x": x, "plan": rng.choice(["a", "b"], rows), "churn": churn})


class Recording:
    """Scores x; remembers the key of every row it was asked to score."""

    def __init__(self) -> None:
        self.scored: set[str] = set()

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        self.scored |= set(frame[KEY_COLUMN])
        p = 1 / (1 + np.exp(-frame["x"].to_numpy()))
        return np.column_stack([1 - p, p])


@pytest.fixture(scope="module")
def world() -> dict:
    source = with_keys(_table(3000, seed=0), DATA)
    roles = pd.Series(source_roles(source[KEY_COLUMN], SPLIT), index=source.index)
    by_role = {role: source[roles == role] for role in ("train", "valid", "test", "holdout", "pool")}
    pool = by_role["pool"].reset_index(drop=True)
    b1 = pool.iloc[0:100]
    # b2: new rows, customers of b1 seen again, and copies of frozen holdout rows and of training rows
    b2 = pd.concat([pool.iloc[100:200], b1.iloc[:20], by_role["holdout"].iloc[:10], by_role["train"].iloc[:10]])
    # b3 (newest): new rows, b1 and b2 customers again, copies of training rows the champion learnt from
    b3 = pd.concat([pool.iloc[200:300], b1.iloc[20:40], b2.iloc[:10], by_role["train"].iloc[10:20]])
    return {"source": source, "roles": by_role, "batches": [("b1", b1), ("b2", b2), ("b3", b3)]}


@pytest.mark.parametrize("include_training", [True, False])
def test_no_key_both_trains_and_evaluates_after_three_batches(world: dict, include_training: bool) -> None:
    built = retraining_set(world["source"], world["batches"], DATA, SPLIT, include_training)
    parts = split_dataset(built.frame, DATA, SPLIT, seed=0)
    learnt = set(parts.train[KEY_COLUMN]) | set(parts.valid[KEY_COLUMN])
    judged = set(parts.test[KEY_COLUMN]) | set(parts.holdout[KEY_COLUMN])
    assert learnt and judged and not learnt & judged
    roles = world["roles"]
    assert set(roles["holdout"][KEY_COLUMN]) <= set(parts.holdout[KEY_COLUMN])  # frozen: whatever batches say
    assert set(roles["test"][KEY_COLUMN]) <= set(parts.test[KEY_COLUMN])
    assert set(world["batches"][-1][1][KEY_COLUMN]) <= set(parts.holdout[KEY_COLUMN])  # the newest only evaluates
    assert parts.pool.empty and built.evaluation_batch == "b3" and built.training_batches == ("b1", "b2")
    assert built.evaluation_keys_removed > 0 and built.frame[KEY_COLUMN].is_unique
    older = set(world["batches"][0][1][KEY_COLUMN]) | set(world["batches"][1][1][KEY_COLUMN])
    evaluates = set(roles["test"][KEY_COLUMN]) | set(roles["holdout"][KEY_COLUMN])
    evaluates |= set(world["batches"][2][1][KEY_COLUMN])
    may_train = older | (
        set(roles["train"][KEY_COLUMN]) | set(roles["valid"][KEY_COLUMN]) if include_training else set()
    )
    assert learnt == may_train - evaluates


def test_the_champion_is_scored_only_on_rows_it_never_saw(world: dict) -> None:
    """The champion came from an earlier retraining on b1 and b2: it learnt from the source's train and valid rows
    and from those batches. Its comparison with the new challenger leaves out every row it learnt from."""
    built = retraining_set(world["source"], world["batches"], DATA, SPLIT, include_training=True)
    parts = split_dataset(built.frame, DATA, SPLIT, seed=0)
    roles, (_, b1), (_, b2) = world["roles"], world["batches"][0], world["batches"][1]
    seen = frozenset(set(roles["train"][KEY_COLUMN]) | set(roles["valid"][KEY_COLUMN]))
    seen |= frozenset(b1[KEY_COLUMN]) | frozenset(b2[KEY_COLUMN]) - frozenset(roles["holdout"][KEY_COLUMN])
    champion, challenger = Recording(), Recording()
    learnt = frozenset(parts.train[KEY_COLUMN]) | frozenset(parts.valid[KEY_COLUMN])
    compared = compare_with_champion(
        ChampionRead("2", champion, 0.5, seen), challenger, 0.5, parts.holdout, learnt, PARAMS
    )
    assert champion.scored and not champion.scored & seen
    assert champion.scored == set(parts.holdout[KEY_COLUMN]) - seen == challenger.scored
    assert not challenger.scored & learnt
    assert compared.evidence.comparison.rows == len(champion.scored) < len(parts.holdout)


def test_a_window_with_nothing_left_to_train_on_is_refused(world: dict) -> None:
    with pytest.raises(DataError, match="leaves no row to train on"):
        retraining_set(world["source"], world["batches"][-1:], DATA, SPLIT, include_training=False)
    with pytest.raises(DataError, match="no labelled batch"):
        retraining_set(world["source"], [], DATA, SPLIT, include_training=True)
    assert ROLE_COLUMN in retraining_set(world["source"], world["batches"], DATA, SPLIT, True).frame.columns
