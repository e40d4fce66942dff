"""SHAP explanations: additivity of reason codes, one-hot aggregation, the model-agnostic path, cross-checks."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from optiflow.assess.explain import (
    compare_importances,
    explain_global,
    global_importance,
    importance_figures,
    make_explainer,
    permutation_check,
    reason_codes,
    shap_by_column,
    source_columns,
)
from optiflow.data.schema import Schema
from optiflow.modeling.families import build_pipeline

SEED = 3
SCHEMA = Schema(numeric=("tenure", "charges"), categorical=("plan", "female"))
COLUMNS = list(SCHEMA.features)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    """300 rows: two numeric columns, a three-way categorical and a 0/1 sensitive column."""
    rng = np.random.default_rng(SEED)
    n = 300
    frame = pd.DataFrame(
        {
            "tenure": rng.uniform(0, 72, n),
            "charges": rng.normal(70, 20, n),
            "plan": rng.choice(["monthly", "yearly", "two_year"], n),
            "female": rng.integers(0, 2, n),
        }
    )
    frame.loc[::37, "charges"] = np.nan  # the imputer has work to do
    plan_effect = frame["plan"].map({"monthly": 1.5, "yearly": 0.0, "two_year": -1.5})
    z = -0.05 * frame["tenure"] + 0.02 * frame["charges"].fillna(70) + plan_effect
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(int)
    return frame, y


@pytest.fixture(scope="module")
def tree(data) -> Pipeline:
    frame, y = data
    params = {"max_iter": 40, "max_leaf_nodes": 8, "learning_rate": 0.1}
    return build_pipeline("hist_gradient_boosting", params, SCHEMA, SEED).fit(frame[COLUMNS], y)


@pytest.fixture(scope="module")
def linear(data) -> Pipeline:
    frame, y = data
    return build_pipeline("logistic_regression", {}, SCHEMA, SEED).fit(frame[COLUMNS], y)


def log_odds(model: Pipeline, rows: pd.DataFrame) -> np.ndarray:
    return logit(np.clip(model.predict_proba(rows)[:, 1], 1e-12, 1 - 1e-12))


@pytest.mark.parametrize(("fixture", "kind"), [("tree", "tree"), ("linear", "linear")])
def test_reason_codes_add_up_to_the_model_log_odds(request, data, fixture, kind):
    model = request.getfixturevalue(fixture)
    frame, _ = data
    rows = frame[COLUMNS].iloc[:25]
    explainer = make_explainer(model, frame[COLUMNS], seed=SEED)
    assert explainer.kind == kind and explainer.output_space == "log_odds"

    codes = reason_codes(model, rows, k=len(COLUMNS), explainer=explainer)
    base = explainer.explain(rows.iloc[:1]).base_value
    totals = np.array([base + sum(value for _, value in row) for row in codes])
    np.testing.assert_allclose(totals, log_odds(model, rows), atol=1e-6)
    np.testing.assert_allclose(
        explainer.explain(rows).output(), model[-1].decision_function(model[:-1].transform(rows))
    )


def test_reason_codes_are_the_top_k_columns_by_absolute_contribution(tree, data):
    frame, _ = data
    rows = frame[COLUMNS].iloc[:10]
    explainer = make_explainer(tree, frame[COLUMNS])
    full = explainer.explain(rows).by_column()
    codes = reason_codes(tree, rows, k=2, explainer=explainer)
    assert all(len(row) == 2 for row in codes)
    for row, (_, contributions) in zip(codes, full.iterrows(), strict=True):
        expected = contributions.abs().sort_values(ascending=False).index[:2].tolist()
        assert [column for column, _ in row] == expected
        assert all(value == pytest.approx(contributions[column]) for column, value in row)


def test_reason_codes_refuse_an_explainer_of_another_model(tree, linear, data):
    frame, _ = data
    with pytest.raises(ValueError, match="different model"):
        reason_codes(tree, frame[COLUMNS].iloc[:2], explainer=make_explainer(linear, frame[COLUMNS]))


def test_global_importance_sums_one_hot_columns_back_to_their_source(linear, data):
    frame, _ = data
    expl = explain_global(linear, frame[COLUMNS], frame[COLUMNS], max_rows=120, seed=SEED)
    assert len(expl.rows) == 120 and expl.values.shape == (120, len(expl.feature_names))
    importance = global_importance(expl)

    features = importance[importance["level"] == "feature"]
    plan_parts = features[features["source"] == "plan"]
    assert sorted(plan_parts["name"]) == [
        "categorical__plan_monthly",
        "categorical__plan_two_year",
        "categorical__plan_yearly",
    ]
    columns = shap_by_column(importance)
    assert sorted(columns.index) == sorted(COLUMNS)
    parts = [list(expl.feature_names).index(name) for name in plan_parts["name"]]
    assert columns["plan"] == pytest.approx(np.abs(expl.values[:, parts].sum(axis=1)).mean())
    assert columns["tenure"] == pytest.approx(features.set_index("name").at["numeric__tenure", "mean_abs_shap"])
    assert columns.index[0] in {"plan", "tenure"}  # the two real drivers lead
    assert importance.groupby("level")["rank"].min().tolist() == [1, 1]


def test_model_agnostic_path_explains_a_nearest_neighbours_pipeline(data):
    frame, y = data
    preprocess = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), ["tenure", "charges"]),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["plan", "female"]),
        ]
    )
    knn = Pipeline([("preprocess", preprocess), ("model", KNeighborsClassifier(n_neighbors=15))])
    knn.fit(frame[COLUMNS], y)
    explainer = make_explainer(knn, frame[COLUMNS], seed=SEED, max_background=10)
    assert explainer.kind == "model_agnostic" and explainer.output_space == "probability"

    rows = frame[COLUMNS].iloc[:4]
    global_state = np.random.get_state()[1].copy()
    expl = explainer.explain(rows)
    assert np.array_equal(np.random.get_state()[1], global_state)  # numpy's global generator is left as it was
    np.testing.assert_allclose(expl.output(), knn.predict_proba(rows)[:, 1], atol=1e-9)
    assert sorted(expl.by_column().columns) == sorted(COLUMNS)
    again = make_explainer(knn, frame[COLUMNS], seed=SEED, max_background=10).explain(rows)
    np.testing.assert_allclose(again.values, expl.values)  # seeded


def test_source_columns_resolves_column_names_that_prefix_each_other():
    frame = pd.DataFrame({"plan": ["a", "b", "a"], "plan_b": ["x", "y", "y"], "level": [1.0, 2.0, 3.0]})
    preprocess = ColumnTransformer(
        [("numeric", "passthrough", ["level"]), ("categorical", OneHotEncoder(sparse_output=False), ["plan", "plan_b"])]
    ).fit(frame)
    names = tuple(preprocess.get_feature_names_out())
    assert names[1:] == ("categorical__plan_a", "categorical__plan_b", "categorical__plan_b_x", "categorical__plan_b_y")
    assert source_columns(preprocess, names) == ("level", "plan", "plan", "plan_b", "plan_b")


def test_permutation_check_and_disagreement_notes(tree, data):
    frame, y = data
    permutation = permutation_check(tree, frame[COLUMNS], y, seed=SEED, n_repeats=2)
    assert list(permutation.columns) == ["column", "importance_mean", "importance_std", "rank"]
    assert sorted(permutation["column"]) == sorted(COLUMNS)
    assert permutation.iloc[-1]["column"] == "female"  # female plays no part in the label

    agreeing = pd.Series(dict(zip(permutation["column"], np.arange(len(permutation), 0, -1), strict=True)))
    assert compare_importances(agreeing, permutation, max_rank_gap=1) == []
    reversed_ranks = pd.Series(dict(zip(permutation["column"], np.arange(1, len(permutation) + 1), strict=True)))
    notes = compare_importances(reversed_ranks, permutation, max_rank_gap=1)
    assert len(notes) == 2
    assert notes[0].startswith(f"{permutation.iloc[-1]['column']}: rank 1 by mean |SHAP|")
    assert "rank 4 by permutation importance" in notes[0]


def test_importance_figures_beeswarm_bar_and_dependence_of_numeric_columns(tree, data):
    frame, _ = data
    expl = explain_global(tree, frame[COLUMNS], frame[COLUMNS], max_rows=80, seed=SEED)
    figures = importance_figures(expl, top_k=3)
    # Only tenure and charges are numeric columns; plan and female are one-hot encoded.
    assert set(figures) == {"shap_beeswarm", "shap_bar", "shap_dependence_tenure", "shap_dependence_charges"}
    for figure in figures.values():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        assert buffer.getvalue().startswith(b"\x89PNG")


def test_explain_refuses_a_bare_estimator(data):
    frame, y = data
    with pytest.raises(TypeError, match="Pipeline"):
        make_explainer(KNeighborsClassifier().fit(frame[["tenure"]], y), frame[["tenure"]])
