"""SHAP explanations of a fitted Optiflow pipeline: global importance, plots, and per-row reason codes.

The explainer matches the model: exact TreeSHAP for gradient-boosted trees, LinearSHAP for logistic regression (both
in log-odds), and Kernel SHAP on ``predict_proba`` for anything else (probability space; slow, so its background is
kept small). SHAP runs on the preprocessed features; the contributions of one-hot columns are summed back to their
source column, so people read them in the columns they know.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from optiflow.config import DataParams, ExplainParams
from optiflow.data.sampling import sample_rows
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels

log = logging.getLogger(__name__)

ExplainerKind = Literal["tree", "linear", "model_agnostic"]
OutputSpace = Literal["log_odds", "probability"]

# Kernel SHAP calls the model (coalitions x background rows) times per explained row: keep both small.
AGNOSTIC_MAX_BACKGROUND = 25
AGNOSTIC_EXTRA_COALITIONS = 512  # coalitions = 2 per feature + this (shap's own default adds 2048)


@dataclass(frozen=True, eq=False)
class Explanation:
    """SHAP values of some rows: ``base_value + values.sum(axis=1)`` is the model output in ``output_space``."""

    kind: ExplainerKind
    output_space: OutputSpace
    feature_names: tuple[str, ...]  # preprocessed features, e.g. "categorical__contract_Two year"
    sources: tuple[str, ...]  # original column each preprocessed feature comes from, e.g. "contract"
    values: np.ndarray  # (rows, features)
    base_value: float
    data: pd.DataFrame  # the preprocessed rows, columns = feature_names
    rows: pd.DataFrame  # the original rows, same order

    def by_column(self) -> pd.DataFrame:
        """Contributions per original column (one-hot parts summed), one row per explained row."""
        frame = pd.DataFrame(self.values, columns=list(self.feature_names))
        grouped = frame.T.groupby(list(self.sources), sort=False).sum().T
        return grouped.reset_index(drop=True)

    def output(self) -> np.ndarray:
        """The model output these values add up to (log-odds or probability, see ``output_space``)."""
        return self.base_value + self.values.sum(axis=1)


@dataclass(frozen=True, eq=False)
class Explainer:
    """A SHAP explainer built once for one model and reused for every batch (the scoring flow's reason codes)."""

    model: Pipeline
    kind: ExplainerKind
    output_space: OutputSpace
    feature_names: tuple[str, ...]
    sources: tuple[str, ...]
    shap_explainer: Any
    seed: int

    def explain(self, rows: pd.DataFrame) -> Explanation:
        """SHAP values for raw rows (the columns the pipeline was trained on)."""
        matrix = _transform(self.model, rows)
        if self.kind == "model_agnostic":
            values = _seeded_kernel_shap(self.shap_explainer, matrix, len(self.feature_names), self.seed)
        else:
            values = np.asarray(self.shap_explainer.shap_values(matrix))
        return Explanation(
            kind=self.kind,
            output_space=self.output_space,
            feature_names=self.feature_names,
            sources=self.sources,
            values=values,
            base_value=float(np.ravel(self.shap_explainer.expected_value)[0]),
            data=pd.DataFrame(matrix, columns=list(self.feature_names)),
            rows=rows.reset_index(drop=True),
        )


def make_explainer(model: Pipeline, background: pd.DataFrame, seed: int = 0, max_background: int = 100) -> Explainer:
    """Pick the explainer that fits the model's final step.

    Trees use TreeSHAP's path-dependent mode (the training cover stored in the trees, no background): with
    shap 0.51 the interventional mode breaks additivity for HistGradientBoosting by up to 0.3 log-odds.
    """
    import shap

    _check_pipeline(model)
    estimator = model[-1]
    names = tuple(str(name) for name in model[:-1].get_feature_names_out())
    sources = source_columns(model[:-1], names)
    if isinstance(estimator, HistGradientBoostingClassifier):
        explainer = Explainer(model, "tree", "log_odds", names, sources, shap.TreeExplainer(estimator), seed)
    elif isinstance(estimator, LogisticRegression) and len(estimator.classes_) == 2:
        reference = _transform(model, _sample(background, max_background, seed))
        linear = shap.LinearExplainer(estimator, shap.maskers.Independent(reference, max_samples=len(reference)))
        explainer = Explainer(model, "linear", "log_odds", names, sources, linear, seed)
    else:
        reference = _transform(model, _sample(background, min(max_background, AGNOSTIC_MAX_BACKGROUND), seed))

        def positive_probability(matrix: np.ndarray) -> np.ndarray:
            return estimator.predict_proba(matrix)[:, 1]

        kernel = shap.KernelExplainer(positive_probability, reference)
        explainer = Explainer(model, "model_agnostic", "probability", names, sources, kernel, seed)
    log.info("explainer for %s: %s SHAP in %s space", type(estimator).__name__, explainer.kind, explainer.output_space)
    return explainer


def explain_global(
    model: Pipeline, X: pd.DataFrame, background: pd.DataFrame, max_rows: int = 500, seed: int = 0
) -> Explanation:
    """SHAP values of a seeded sample of at most ``max_rows`` rows of ``X`` (for global importance and plots)."""
    return make_explainer(model, background, seed).explain(_sample(X, max_rows, seed))


def global_importance(expl: Explanation) -> pd.DataFrame:
    """Mean |SHAP| per preprocessed feature (level "feature") and per original column (level "column").

    A column's importance is the mean of |sum of its one-hot parts| per row, not the sum of the parts' means: the
    parts of one row often pull in opposite directions.
    """
    per_feature = pd.DataFrame(
        {
            "level": "feature",
            "name": list(expl.feature_names),
            "source": list(expl.sources),
            "mean_abs_shap": np.abs(expl.values).mean(axis=0),
        }
    )
    by_column = expl.by_column()
    per_column = pd.DataFrame(
        {
            "level": "column",
            "name": list(by_column.columns),
            "source": list(by_column.columns),
            "mean_abs_shap": by_column.abs().mean(axis=0).to_numpy(),
        }
    )
    parts = []
    for part in (per_column, per_feature):
        part = part.sort_values(["mean_abs_shap", "name"], ascending=[False, True], ignore_index=True)
        parts.append(part.assign(rank=np.arange(1, len(part) + 1)))
    return pd.concat(parts, ignore_index=True)


def shap_by_column(importance: pd.DataFrame) -> pd.Series:
    """The column-level mean |SHAP| out of ``global_importance``, indexed by column name."""
    columns = importance[importance["level"] == "column"]
    return columns.set_index("name")["mean_abs_shap"]


def permutation_check(
    model: Pipeline, X: pd.DataFrame, y: np.ndarray, seed: int = 0, n_repeats: int = 5
) -> pd.DataFrame:
    """Drop in ROC AUC when each original column is shuffled: a model-agnostic cross-check of SHAP's ranking."""
    from sklearn.inspection import permutation_importance

    result = permutation_importance(
        model, X, np.asarray(y).astype(int), scoring="roc_auc", n_repeats=n_repeats, random_state=seed, n_jobs=1
    )
    frame = pd.DataFrame(
        {
            "column": list(X.columns),
            "importance_mean": result.importances_mean,
            "importance_std": result.importances_std,
        }
    )
    frame = frame.sort_values(["importance_mean", "column"], ascending=[False, True], ignore_index=True)
    return frame.assign(rank=np.arange(1, len(frame) + 1))


def compare_importances(
    shap_by_column: pd.Series | Mapping[str, float], permutation: pd.DataFrame, max_rank_gap: int = 3, top: int = 10
) -> list[str]:
    """Notes naming columns whose SHAP and permutation ranks differ by more than ``max_rank_gap`` places.

    Only columns in the top ``top`` of either ranking are compared: ranks among near-zero importances are noise.
    """
    shap_values = pd.Series(shap_by_column, dtype=float)
    drops = permutation.set_index("column")["importance_mean"].astype(float)
    common = sorted(set(shap_values.index) & set(drops.index))
    shap_rank, permutation_rank = _ranks(shap_values[common]), _ranks(drops[common])
    notes = []
    for column in sorted(common, key=shap_rank.__getitem__):
        by_shap, by_permutation = shap_rank[column], permutation_rank[column]
        if min(by_shap, by_permutation) <= top and abs(by_shap - by_permutation) > max_rank_gap:
            notes.append(
                f"{column}: rank {by_shap} by mean |SHAP| ({shap_values[column]:.4g}) but rank {by_permutation} "
                f"by permutation importance (ROC AUC drop {drops[column]:.4g})"
            )
    log.info("importance cross-check: %d disagreement(s)", len(notes))
    return notes


@dataclass(frozen=True, eq=False)
class GlobalExplanation:
    """The explain stage's outcome: SHAP on a sample of test rows, and permutation importance on the same rows."""

    explanation: Explanation
    importance: pd.DataFrame  # global_importance
    permutation: pd.DataFrame  # permutation_check
    disagreements: list[str]  # compare_importances
    top: pd.DataFrame  # the top columns by mean |SHAP| (at least 5)
    background_rows: int

    def summary(self, model: str, plots: list[str]) -> dict[str, Any]:
        """explain/summary.json: what the model card and the run report show."""
        return {
            "model": model,
            "explainer": self.explanation.kind,
            "output_space": self.explanation.output_space,
            "rows_explained": len(self.explanation.values),
            "background_rows": self.background_rows,
            "base_value": self.explanation.base_value,
            "top_columns": [
                {"column": r.name, "mean_abs_shap": float(r.mean_abs_shap), "rank": int(r.rank)}
                for r in self.top.itertuples()
            ],
            "permutation_top": self.permutation.head(5).to_dict(orient="records"),
            "disagreements": self.disagreements,
            "plots": plots,
        }


def explain_model(
    model: Pipeline, train: pd.DataFrame, test: pd.DataFrame, data: DataParams, settings: ExplainParams, seed: int
) -> GlobalExplanation:
    """SHAP global importance on a seeded sample of test rows (background from train), cross-checked by
    permutation importance on the same rows."""
    from threadpoolctl import threadpool_limits

    features = list(resolve_schema(test, data).features)
    background = sample_rows(train[features], settings.background_rows, seed)
    explanation = explain_global(model, test[features], background, max_rows=settings.max_rows, seed=seed)
    importance = global_importance(explanation)
    # the same seeded sample explain_global draws, so SHAP and permutation importance judge the same rows
    sample = sample_rows(test[features], settings.max_rows, seed)
    # one thread: the ~100 predict calls of permutation importance stall in OpenMP on a busy host (100x slower)
    with threadpool_limits(limits=1):
        permutation = permutation_check(
            model, sample, labels(test.loc[sample.index], data), seed, settings.permutation_repeats
        )
    notes = compare_importances(shap_by_column(importance), permutation, settings.max_rank_gap)
    top = importance[importance["level"] == "column"].head(max(settings.top_k, 5))
    return GlobalExplanation(explanation, importance, permutation, notes, top, len(background))


def reason_codes(
    model: Pipeline, rows: pd.DataFrame, k: int = 3, explainer: Explainer | None = None
) -> list[list[tuple[str, float]]]:
    """Per row, the ``k`` original columns that moved its score most, with their signed contribution.

    Pass an explainer from ``make_explainer`` when scoring many batches; without one, it is built here with
    ``rows`` as the background.
    """
    if explainer is None:
        explainer = make_explainer(model, rows)
    elif explainer.model is not model:
        raise ValueError("the explainer was built for a different model; build it with make_explainer(model, ...)")
    contributions = explainer.explain(rows).by_column()
    codes = []
    for values in contributions.to_numpy():
        # Largest |contribution| first; equal ones by column name, so the order never depends on chance.
        ranked = sorted(zip(contributions.columns, values, strict=True), key=lambda item: (-abs(item[1]), item[0]))
        codes.append([(str(column), float(value)) for column, value in ranked[:k]])
    return codes


def importance_figures(expl: Explanation, top_k: int = 3, max_display: int = 15) -> dict[str, Figure]:
    """Beeswarm (preprocessed features), bar (original columns) and dependence plots of the top numeric columns.

    Figures are plain ``matplotlib.figure.Figure`` objects (saved with Agg, no pyplot state); save them with
    ``bbox_inches="tight"`` so long feature names are not cut.
    """
    import shap

    figures = {}
    per_feature = shap.Explanation(
        values=expl.values,
        base_values=np.full(len(expl.values), expl.base_value),
        data=expl.data.to_numpy(),
        feature_names=list(expl.feature_names),
    )
    figure = Figure(figsize=(8, 6))
    axes = figure.subplots()
    with _seeded_global_rng(0):  # the beeswarm jitters overlapping dots with numpy's global generator
        shap.plots.beeswarm(per_feature, max_display=max_display, ax=axes, show=False, plot_size=None)
    axes.set_title(f"SHAP values per preprocessed feature ({expl.kind}, {expl.output_space})")
    figures["shap_beeswarm"] = figure

    by_column = expl.by_column()
    per_column = shap.Explanation(values=by_column.to_numpy(), feature_names=list(by_column.columns))
    figure = Figure(figsize=(8, 6))
    axes = figure.subplots()
    shap.plots.bar(per_column, max_display=max_display, ax=axes, show=False)
    axes.set_title(f"Mean |SHAP| per original column ({expl.output_space})")
    figures["shap_bar"] = figure

    ranking = by_column.abs().mean(axis=0).sort_values(ascending=False, kind="stable")
    numeric = [column for column in ranking.index if column in _numeric_columns(expl)][:top_k]
    for column in numeric:
        figure = Figure(figsize=(5, 4))
        axes = figure.subplots()
        axes.scatter(expl.rows[column], by_column[column], s=8, alpha=0.6)
        axes.axhline(0.0, color="grey", linewidth=0.8)
        axes.set(xlabel=column, ylabel=f"SHAP value ({expl.output_space})", title=f"Dependence: {column}")
        figure.tight_layout()
        figures[f"shap_dependence_{column}"] = figure
    return figures


def source_columns(preprocess: Pipeline | ColumnTransformer, names: tuple[str, ...]) -> tuple[str, ...]:
    """The original column of each preprocessed feature, read from the fitted ColumnTransformer's parts.

    A part that keeps its columns maps one to one; in any other part an output belongs to the longest input column
    it starts with followed by "_" (OneHotEncoder names outputs ``<column>_<category>``), or else to itself.
    """
    transformer = preprocess[-1] if isinstance(preprocess, Pipeline) else preprocess
    if not isinstance(transformer, ColumnTransformer):
        inputs = [str(column) for column in getattr(preprocess, "feature_names_in_", ())]
        return tuple(name if name in inputs else _match(name, inputs) for name in names)
    sources: list[str] = []
    for _, step, columns in transformer.transformers_:
        selected = _column_names(transformer, columns)
        if (isinstance(step, str) and step == "drop") or not selected:
            continue
        outputs = selected if isinstance(step, str) else [str(out) for out in step.get_feature_names_out(selected)]
        # A part that keeps its columns (impute, scale, passthrough) maps one to one; others are matched by prefix.
        sources += selected if outputs == selected else [_match(output, selected) for output in outputs]
    if len(sources) != len(names):
        raise ValueError(f"mapped {len(sources)} preprocessed features back to columns, but the model has {len(names)}")
    return tuple(sources)


def _match(output: str, inputs: list[str]) -> str:
    candidates = [column for column in inputs if output.startswith(f"{column}_")]
    return max(candidates, key=len) if candidates else output


def _column_names(transformer: ColumnTransformer, columns: Any) -> list[str]:
    selected = list(columns) if not isinstance(columns, str) else [columns]
    if selected and all(isinstance(column, (bool, np.bool_)) for column in selected):
        return [str(name) for name, keep in zip(transformer.feature_names_in_, selected, strict=True) if keep]
    return [str(transformer.feature_names_in_[c]) if isinstance(c, (int, np.integer)) else str(c) for c in selected]


def _ranks(values: pd.Series) -> dict[str, int]:
    """1 = most important; equal values ranked by name."""
    ordered = values.sort_index().sort_values(ascending=False, kind="stable")
    return {str(column): rank for rank, column in enumerate(ordered.index, start=1)}


def _numeric_columns(expl: Explanation) -> set[str]:
    """Columns that map to exactly one preprocessed feature and hold numbers: the ones a dependence plot suits."""
    counts = pd.Series(expl.sources).value_counts()
    return {
        column
        for column, count in counts.items()
        if count == 1 and column in expl.rows.columns and pd.api.types.is_numeric_dtype(expl.rows[column])
    }


@contextlib.contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """shap draws from numpy's global generator: seed it for one call, then restore it (not thread-safe)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _seeded_kernel_shap(kernel: Any, matrix: np.ndarray, features: int, seed: int) -> np.ndarray:
    """Kernel SHAP draws its coalitions from numpy's global generator."""
    with _seeded_global_rng(seed):
        values = kernel.shap_values(
            matrix, nsamples=2 * features + AGNOSTIC_EXTRA_COALITIONS, l1_reg=False, silent=True
        )
    return np.asarray(values)


def _transform(model: Pipeline, rows: pd.DataFrame) -> np.ndarray:
    matrix = model[:-1].transform(rows)
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix, dtype=float)


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    if rows < 1:
        raise ValueError(f"need at least 1 row to sample, got {rows}")
    return sample_rows(frame, rows, seed)


def _check_pipeline(model: Any) -> None:
    if not isinstance(model, Pipeline) or len(model.steps) < 2:
        raise TypeError(f"expected a fitted sklearn Pipeline of preprocessing + estimator, got {type(model).__name__}")
