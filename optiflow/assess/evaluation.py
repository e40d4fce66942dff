"""Choosing on the validation split, then testing once.

Every candidate is scored on the validation split at its own threshold (chosen there); the primary metric picks the
family; the chosen model is calibrated on the validation split (sigmoid or isotonic, chosen by cross-fitting there)
and gets its threshold there. Only that final model meets the test split, once: its metrics, calibration before and
after, curves, confusion matrix and metrics by slice are the honest estimate the report and the gates use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from optiflow.assess.calibration import (
    CalibrationChoice,
    choose_calibration,
    decision_threshold,
    expected_calibration_error,
    reliability_table,
    slice_metrics,
)
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

VALID_SPLIT, TEST_SPLIT = "valid", "test"


@dataclass(frozen=True, eq=False)
class Evaluation:
    validation: dict[str, dict[str, float]]  # per candidate: validation metrics, ECE and its threshold
    selection: Selection  # by the primary metric on the validation split
    calibration: CalibrationChoice
    threshold: float  # the calibrated model's, chosen on the validation split
    threshold_policy: str
    test: dict[str, float]  # the final (calibrated) model on the test split: metrics, ECE before and after
    valid_rows: int
    test_rows: int
    meta: dict[str, Any]  # the final candidate's meta.json
    curves: dict[str, pd.DataFrame]  # ROC and PR points of the final model on the test split
    confusion: pd.DataFrame  # the final model's, at its threshold
    reliability: dict[str, pd.DataFrame]  # test split, before and after calibration
    slices: pd.DataFrame  # the final model's metrics by slice on the test split

    @property
    def model(self) -> Any:
        """The final candidate: the chosen model behind its calibration map."""
        return self.calibration.model

    def decisions(self) -> dict[str, dict[str, Any]]:
        """Every choice made here and the data it used; the test split chose nothing."""
        ranking = ", ".join(f"{name} {value:.4f}" for name, value in self.selection.ranking)
        return {
            "model": {
                "choice": self.selection.family,
                "data": VALID_SPLIT,
                "rows": self.valid_rows,
                "evidence": f"highest validation {self.selection.metric}: {ranking}",
            },
            "calibration": {
                "choice": self.calibration.method,
                "data": VALID_SPLIT,
                "rows": self.valid_rows,
                "evidence": f"lowest out-of-fold Brier ({self.calibration.folds}-fold cross-fit): "
                + ", ".join(f"{method} {value:.5f}" for method, value in self.calibration.brier.items()),
            },
            "threshold": {
                "choice": round(self.threshold, 6),
                "data": VALID_SPLIT,
                "rows": self.valid_rows,
                "evidence": f"policy {self.threshold_policy} on the calibrated validation scores",
            },
            "test metrics": {
                "choice": "none (reported and gated only)",
                "data": TEST_SPLIT,
                "rows": self.test_rows,
                "evidence": "the final model scored once",
            },
        }

    def report(self) -> dict[str, Any]:
        """metrics.json: the numbers DVC compares, and what later stages read (the selection, its threshold)."""
        return {
            "primary_metric": self.selection.metric,
            "selected": self.selection.family,
            "selected_on": VALID_SPLIT,
            "threshold": self.threshold,
            "threshold_policy": self.threshold_policy,
            "calibration": self.calibration.to_dict(),
            "valid_rows": self.valid_rows,
            "test_rows": self.test_rows,
            "test": self.test,
            "candidates": self.validation,
            "decisions": self.decisions(),
        }

    def reliability_frame(self) -> pd.DataFrame:
        return pd.concat([table.assign(model=name) for name, table in self.reliability.items()])

    def table_rows(self) -> list[dict[str, Any]]:
        """The candidates' validation figures, the selected one marked."""
        return [
            {"candidate": name, "selected": name == self.selection.family, **values}
            for name, values in self.validation.items()
        ]


def evaluate_candidates(
    candidates: Mapping[str, Path],
    valid: pd.DataFrame,
    test: pd.DataFrame,
    data: DataParams,
    settings: EvaluateParams,
    test_source: Path | str,
    seed: int,
) -> Evaluation:
    """Score each candidate folder (loaded one at a time) on the validation split, choose and calibrate there, then
    score the final model on the test split once; slice columns the params name but the test split lacks are a
    DataError naming `test_source`."""
    specs = slice_specs(data, settings.slices)
    named = {column for spec in specs for column in ((spec,) if isinstance(spec, str) else spec)}
    missing = sorted(named - set(test.columns))
    if missing:
        raise DataError(
            f"{test_source}: slice column(s) {missing} named in data.sensitive_features or evaluate.slices "
            f"are not in the data; columns: {sorted(test.columns)}"
        )
    y_valid = labels(valid, data)
    validation = {}
    for name, folder in candidates.items():
        model, _ = load_candidate(folder)
        scores = model.predict_proba(valid)[:, 1]
        threshold = decision_threshold(y_valid, scores, settings)
        validation[name] = {
            **classification_metrics(y_valid, scores, threshold),
            "ece": expected_calibration_error(y_valid, scores, settings.calibration_bins),
            "threshold": threshold,
        }
    selection = select_best(validation, settings.primary_metric)
    chosen, meta = load_candidate(candidates[selection.family])
    calibration = choose_calibration(chosen, valid, y_valid, settings.calibration_folds, seed)
    threshold = decision_threshold(y_valid, calibration.model.predict_proba(valid)[:, 1], settings)

    # The test split, once: the final model, and its uncalibrated self for the calibration before/after.
    y_test = labels(test, data)
    scores = calibration.model.predict_proba(test)[:, 1]
    before = chosen.predict_proba(test)[:, 1]
    bins = settings.calibration_bins
    test_metrics = {
        **classification_metrics(y_test, scores, threshold),
        "ece": expected_calibration_error(y_test, scores, bins),
        "ece_uncalibrated": expected_calibration_error(y_test, before, bins),
        "threshold": threshold,
    }
    final_meta = {
        **meta,
        "candidate": selection.family,
        "calibration": calibration.to_dict(),
        "threshold": threshold,
    }
    return Evaluation(
        validation=validation,
        selection=selection,
        calibration=calibration,
        threshold=threshold,
        threshold_policy=settings.threshold_policy,
        test=test_metrics,
        valid_rows=len(valid),
        test_rows=len(test),
        meta=final_meta,
        curves=curve_tables(y_test, {selection.family: scores}),
        confusion=confusion_table(y_test, scores, threshold),
        reliability={
            "uncalibrated": reliability_table(y_test, before, bins),
            f"{calibration.method} calibration": reliability_table(y_test, scores, bins),
        },
        slices=slice_metrics(test, y_test, scores, threshold, specs).assign(family=selection.family),
    )
