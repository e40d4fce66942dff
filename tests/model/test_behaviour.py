"""Model tests: every family, trained on a sample of the shipped table, behaves as a churn model should.

Behavioural checks in the CheckList manner: a minimum of skill on rows it never saw, invariance to what must not
matter (row order, columns the model does not use, category spelling around blanks), the direction domain
knowledge expects (a two-year contract lowers the churn risk of the same customer), determinism, and a saved
candidate scoring exactly as the model in memory. No test names which family wins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from optiflow.config import load_config
from optiflow.data.ingest import coerce
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels, split_dataset
from optiflow.modeling.candidates import load_candidate, save_candidate
from optiflow.modeling.families import FAMILIES, build_pipeline
from tests.conftest import REPO

FAST = {"mlp": {"max_epochs": 30}}  # the MLP's defaults train for up to 100 epochs: enough skill well before that


@pytest.fixture(scope="module")
def data(churn_sample: pd.DataFrame):
    params = load_config(REPO / "params.yaml").params
    frame = coerce(churn_sample, params.data, Path("churn_sample"))
    no_pool = params.split.model_copy(update={"pool_size": 0.0})  # nothing is simulated here: train on those rows too
    splits = split_dataset(frame, params.data, no_pool, params.seed)
    schema = resolve_schema(frame, params.data)
    return params, schema, splits


@pytest.fixture(scope="module")
def models(data) -> dict:
    params, schema, splits = data
    features, target = splits.train[list(schema.features)], labels(splits.train, params.data)
    return {
        family: build_pipeline(family, FAST.get(family, {}), schema, params.seed).fit(features, target)
        for family in FAMILIES
    }


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_minimum_skill_on_rows_it_never_saw(family: str, data, models) -> None:
    params, _, splits = data
    unseen = pd.concat([splits.valid, splits.test, splits.holdout], ignore_index=True)  # ~740 rows it never saw
    scores = models[family].predict_proba(unseen)[:, 1]
    assert roc_auc_score(labels(unseen, params.data), scores) >= 0.75


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_scores_do_not_depend_on_row_order_or_unused_columns(family: str, data, models) -> None:
    _, _, splits = data
    rows = splits.test.head(200)
    scores = models[family].predict_proba(rows)[:, 1]
    shuffled = rows.sample(frac=1.0, random_state=3)
    np.testing.assert_allclose(
        models[family].predict_proba(shuffled)[:, 1], pd.Series(scores, rows.index)[shuffled.index]
    )
    extra = rows.assign(customer_note="called twice", churn="Yes")
    np.testing.assert_allclose(models[family].predict_proba(extra)[:, 1], scores)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_two_year_contract_lowers_the_churn_risk_of_the_same_customers(family: str, data, models) -> None:
    _, _, splits = data
    monthly = splits.test[splits.test["contract"] == "Month-to-month"].head(200)
    committed = monthly.assign(contract="Two year")
    before, after = (models[family].predict_proba(rows)[:, 1] for rows in (monthly, committed))
    assert after.mean() < before.mean() and (after < before).mean() >= 0.8


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_same_seed_trains_the_same_model(family: str, data, models) -> None:
    params, schema, splits = data
    features, target = splits.train[list(schema.features)], labels(splits.train, params.data)
    again = build_pipeline(family, FAST.get(family, {}), schema, params.seed).fit(features, target)
    np.testing.assert_array_equal(again.predict_proba(splits.test), models[family].predict_proba(splits.test))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_saved_candidate_scores_exactly_as_the_model_in_memory(family: str, data, models, tmp_path: Path) -> None:
    _, schema, splits = data
    save_candidate(tmp_path / family, models[family], {"family": family, "features": list(schema.features)})
    loaded, meta = load_candidate(tmp_path / family)
    assert meta["family"] == family
    np.testing.assert_array_equal(loaded.predict_proba(splits.test), models[family].predict_proba(splits.test))
