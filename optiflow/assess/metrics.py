"""Test-split metrics, curve data for DVC plots, rendered figures, the decision threshold, latency, and the choice
of the best candidate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from optiflow.config import DataParams


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = (scores >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y_true, scores)),
        "pr_auc": float(average_precision_score(y_true, scores)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "neg_log_loss": -float(log_loss(y_true, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "neg_brier": -float(brier_score_loss(y_true, scores)),
    }


def slice_specs(data: DataParams, extra: tuple[str, ...]) -> list[str | tuple[str, ...]]:
    """Each sensitive feature, their intersection (where gaps hide), then the extra slice columns from params."""
    sensitive = list(data.sensitive_features)
    specs: list[str | tuple[str, ...]] = list(sensitive)
    if len(sensitive) > 1:
        specs.append(tuple(sensitive))
    return specs + [column for column in extra if column not in sensitive]


@dataclass(frozen=True)
class Selection:
    family: str
    metric: str
    score: float
    ranking: tuple[tuple[str, float], ...]


def select_best(metrics: dict[str, dict[str, float]], primary_metric: str) -> Selection:
    """Highest primary metric wins; ties go to the family named first in alphabetical order, for determinism."""
    ranking = sorted(
        ((family, m[primary_metric]) for family, m in metrics.items()), key=lambda item: (-item[1], item[0])
    )
    best, score = ranking[0]
    return Selection(family=best, metric=primary_metric, score=score, ranking=tuple(ranking))


def curve_tables(y_true: np.ndarray, scores_by_family: dict[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Long-format ROC and PR tables (one row per point per family): the data behind DVC plots."""
    roc_parts, pr_parts = [], []
    for family, scores in scores_by_family.items():
        fpr, tpr, _ = roc_curve(y_true, scores)
        roc_parts.append(pd.DataFrame({"family": family, "fpr": fpr, "tpr": tpr}))
        precision, recall, _ = precision_recall_curve(y_true, scores)
        pr_parts.append(pd.DataFrame({"family": family, "recall": recall, "precision": precision}))
    return {"roc": pd.concat(roc_parts, ignore_index=True), "pr": pd.concat(pr_parts, ignore_index=True)}


def confusion_table(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> pd.DataFrame:
    """One row per test example (actual, predicted), the layout DVC's confusion template expects."""
    predicted = (scores >= threshold).astype(int)
    return pd.DataFrame({"actual": y_true.astype(int), "predicted": predicted})


def render_figures(curves: dict[str, pd.DataFrame], confusion: pd.DataFrame, selected: str, target: Path) -> list[Path]:
    """PNG versions of the plots for people and MLflow (DVC's own HTML needs a CDN, which is often offline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optiflow.io import write_with

    written = []
    for name, (x, y, title) in {
        "roc": ("fpr", "tpr", "ROC curve (test split)"),
        "pr": ("recall", "precision", "Precision-recall curve (test split)"),
    }.items():
        figure, axes = plt.subplots(figsize=(5, 4.5))
        for family, part in curves[name].groupby("family", sort=True):
            axes.plot(part[x], part[y], label=family, linewidth=2 if family == selected else 1)
        axes.set(xlabel=x, ylabel=y, title=title)
        axes.legend(loc="lower right" if name == "roc" else "lower left")
        written.append(_save(figure, target / f"{name}.png", write_with))
        plt.close(figure)

    matrix = confusion_matrix(confusion["actual"], confusion["predicted"], labels=[0, 1])
    figure, axes = plt.subplots(figsize=(4, 3.5))
    axes.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center")
    axes.set(xticks=[0, 1], yticks=[0, 1], xlabel="predicted", ylabel="actual", title=f"Confusion: {selected}")
    written.append(_save(figure, target / "confusion.png", write_with))
    plt.close(figure)
    return written


def _save(figure, path: Path, write_with) -> Path:
    figure.tight_layout()
    write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    return path
