"""Robustness of a candidate to small, plausible changes of its numeric inputs (±5% on charges, ±1 month of tenure).

Two views, both model-agnostic (only ``predict_proba``): random perturbations inside the bounds (how jittery is
the decision for honest noise?) and a search attack that tries every corner and centre of the bounds per row and
keeps the worst (how far can a customer who edits their own figures move their score?). The search pushes each row
away from the model's own decision, as an attacker who sees only the model's answers would; the true labels only
score the outcome. Reported as label flip rates at the decision threshold and ROC AUC under each perturbation.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from optiflow.config import Bound, RobustnessParams


@dataclass(frozen=True)
class RobustnessReport:
    rows: int
    auc_clean: float
    flip_rate_random: float
    auc_random: float
    flip_rate_search: float
    auc_search: float

    @property
    def auc_drop_search(self) -> float:
        return self.auc_clean - self.auc_search

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "auc_drop_search": self.auc_drop_search}


def perturb(frame: pd.DataFrame, bounds: dict[str, Bound], steps: dict[str, np.ndarray]) -> pd.DataFrame:
    """``frame`` with each bounded column moved by ``steps[column]`` (in [-1, 1], a fraction of its bound)."""
    moved = frame.copy()
    for column, bound in bounds.items():
        values = frame[column].to_numpy(dtype=float)
        delta = steps[column] * (values * bound.relative if bound.relative else bound.absolute)
        moved[column] = np.clip(values + delta, 0.0, None) if bound.non_negative else values + delta
    return moved


def evaluate_robustness(
    model: Any, features: pd.DataFrame, y: np.ndarray, threshold: float, params: RobustnessParams, seed: int
) -> RobustnessReport:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    if len(features) > params.max_rows:
        keep = np.sort(rng.choice(len(features), params.max_rows, replace=False))
        features, y = features.iloc[keep].reset_index(drop=True), y[keep]
    bounds = {column: bound for column, bound in params.bounds.items() if column in features.columns}
    clean = model.predict_proba(features)[:, 1]
    label = clean >= threshold

    random_scores = []
    for _ in range(params.random_draws):
        steps = {column: rng.uniform(-1.0, 1.0, len(features)) for column in bounds}
        random_scores.append(model.predict_proba(perturb(features, bounds, steps))[:, 1])
    random_scores = np.array(random_scores)
    flip_random = float(np.mean((random_scores >= threshold) != label))

    levels = np.linspace(-1.0, 1.0, params.search_levels)
    corners = list(itertools.product(levels, repeat=len(bounds))) or [()]
    stacked = pd.concat(
        [perturb(features, bounds, {c: np.full(len(features), s) for c, s in zip(bounds, corner, strict=True)})
         for corner in corners],
        ignore_index=True,
    )  # fmt: skip
    searched = model.predict_proba(stacked)[:, 1].reshape(len(corners), len(features))
    lowest, highest = searched.min(axis=0), searched.max(axis=0)
    flipped = np.where(label, lowest < threshold, highest >= threshold)
    worst = np.where(label, lowest, highest)  # each row pushed away from the model's own decision
    return RobustnessReport(
        rows=len(features),
        auc_clean=float(roc_auc_score(y, clean)),
        flip_rate_random=flip_random,
        auc_random=float(np.mean([roc_auc_score(y, scores) for scores in random_scores])),
        flip_rate_search=float(np.mean(flipped)),
        auc_search=float(roc_auc_score(y, worst)),
    )
