"""Every candidate judged alike on the test split: each at its own threshold, chosen on the validation split, with its
calibration and its metrics by slice; the best one selected by the primary metric."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optiflow.assess.calibration import (
    decision_threshold,
    expected_calibration_error,
    reliability_table,
    slice_metrics,
)
from optiflow.assess.groups import bin_edges
from optiflow.assess.metrics import (
    Selection,
    classification_metrics,
    confusion_table,
    curve_tables,
    select_best,
    slice_specs,
)
from optiflow.config import DataParams, EvaluateParams
from optiflow.data.split import labels
from optiflow.errors import DataError
from optiflow.modeling.candidates import load_candidate


@dataclass(frozen=True, eq=False)
class Evaluation:
    metrics: dict[str, dict[str, float]]  # per candidate: test metrics, ECE and its threshold
    selection: Selection
    threshold_policy: str
    test_rows: int
    curves: dict[str, pd.DataFrame]  # ROC and PR points of every candidate
    confusion: pd.DataFrame  # the selected candidate's, at its threshold
    reliability: dict[str, pd.DataFrame]  # per candidate
    slices: pd.DataFrame  # metrics by slice, every candidate

    @property
    def threshold(self) -> float:
        return self.metrics[self.selection.family]["threshold"]

    def report(self) -> dict[str, Any]:
        """metrics.json: the numbers DVC compares, and what later stages read (the selection, its threshold)."""
        return {
            "primary_metric": self.selection.metric,
            "selected": self.selection.family,
            "threshold": self.threshold,
            "threshold_policy": self.threshold_policy,
            "test_rows": self.test_rows,
            "test": self.metrics[self.selection.family],
            "candidates": self.metrics,
        }

    def reliability_frame(self) -> pd.DataFrame:
        return pd.concat([table.assign(family=family) for family, table in self.reliability.items()])

    def table_rows(self) -> list[dict[str, Any]]:
        return [
            {"family": family, "selected": family == self.selection.family, **values}
            for family, values in self.metrics.items()
        ]


def evaluate_candidates(
    candidates: Mapping[str, Path],
    valid: pd.DataFrame,
    test: pd.DataFrame,
    data: DataParams,
    settings: EvaluateParams,
    test_source: Path | str,
) -> Evaluation:
    """Score each candidate folder (loaded one at a time) and select the best; slice columns the params name but
    the test split lacks are a DataError naming `test_source`."""
    y_valid, y_test = labels(valid, data), labels(test, data)
    specs = slice_specs(data, settings.slices)
    named = {column for spec in specs for column in ((spec,) if isinstance(spec, str) else spec)}
    missing = sorted(named - set(test.columns))
    if missing:
        raise DataError(
            f"{test_source}: slice column(s) {missing} named in data.sensitive_features or evaluate.slices "
            f"are not in the data; columns: {sorted(test.columns)}"
        )
    bins = bin_edges(test, sorted(named), data.groups)  # numeric slice columns (an age) are cut into bins
    scores: dict[str, np.ndarray] = {}
    metrics, reliability, slices = {}, {}, []
    for family, folder in candidates.items():
        model, _ = load_candidate(folder)
        threshold = decision_threshold(y_valid, model.predict_proba(valid)[:, 1], settings)
        scores[family] = model.predict_proba(test)[:, 1]
        metrics[family] = {
            **classification_metrics(y_test, scores[family], threshold),
            "ece": expected_calibration_error(y_test, scores[family], settings.calibration_bins),
            "threshold": threshold,
        }
        reliability[family] = reliability_table(y_test, scores[family], settings.calibration_bins)
        slices.append(slice_metrics(test, y_test, scores[family], threshold, specs, bins).assign(family=family))
    selection = select_best(metrics, settings.primary_metric)
    return Evaluation(
        metrics=metrics,
        selection=selection,
        threshold_policy=settings.threshold_policy,
        test_rows=len(test),
        curves=curve_tables(y_test, scores),
        confusion=confusion_table(y_test, scores[selection.family], metrics[selection.family]["threshold"]),
        reliability=reliability,
        slices=pd.concat(slices, ignore_index=True),
    )
