"""Group fairness with fairlearn: metrics per sensitive group, disparity gates, and threshold-optimizer mitigation.

Groups come from each sensitive feature alone and from their intersection, where gaps hide most often.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from optiflow.assess.gates import GateReport, GateResult, at_least, at_most
from optiflow.assess.groups import group_labels, overall, per_group
from optiflow.config import DataParams, FairnessParams
from optiflow.data.split import labels
from optiflow.io import finite_or_none
from optiflow.modeling.candidates import load_candidate

if TYPE_CHECKING:
    from fairlearn.postprocessing import ThresholdOptimizer
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

GROUP_METRICS = ("count", "selection_rate", "tpr", "fpr", "precision", "roc_auc")
NOT_REGISTERED = "reported only: a fitted ThresholdOptimizer cannot be saved with skops, so it is not registered"


@dataclass(frozen=True, eq=False)
class FeatureFairness:
    """Group metrics for one sensitive feature (or the intersection of several) and fairlearn's disparities."""

    name: str
    columns: tuple[str, ...]
    groups: pd.DataFrame  # index: group label such as "female=1, senior_citizen=0"; columns: GROUP_METRICS
    demographic_parity_difference: float
    demographic_parity_ratio: float
    equalized_odds_difference: float


@dataclass(frozen=True, eq=False)
class FairnessReport:
    """Per-group metrics for every sensitive feature and their intersection.

    ``threshold`` is None when the report was built from label predictions (a mitigated model): ROC AUC is then
    undefined and reported as null.
    """

    threshold: float | None
    overall: dict[str, float]
    features: tuple[FeatureFairness, ...]

    def table(self) -> pd.DataFrame:
        """Tidy table, one row per (feature, group): what a person reads and what artifacts show."""
        parts = [
            feature.groups.rename_axis("group").reset_index().assign(feature=feature.name) for feature in self.features
        ]
        table = pd.concat(parts, ignore_index=True)
        return table[["feature", "group", *GROUP_METRICS]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN becomes null): passes ``json.dumps(..., allow_nan=False)``."""
        return {
            "threshold": self.threshold,
            "overall": {key: finite_or_none(value) for key, value in self.overall.items()},
            "features": {
                feature.name: {
                    "columns": list(feature.columns),
                    "demographic_parity_difference": finite_or_none(feature.demographic_parity_difference),
                    "demographic_parity_ratio": finite_or_none(feature.demographic_parity_ratio),
                    "equalized_odds_difference": finite_or_none(feature.equalized_odds_difference),
                    "groups": {
                        str(group): {metric: finite_or_none(row[metric]) for metric in GROUP_METRICS}
                        for group, row in feature.groups.iterrows()
                    },
                }
                for feature in self.features
            },
        }


def group_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float, sensitive: pd.DataFrame) -> FairnessReport:
    """Fairness report of a scoring model: labels are ``scores >= threshold``; ROC AUC uses the scores."""
    scores = np.asarray(scores, dtype=float)
    return _report(y_true, (scores >= threshold).astype(int), scores, sensitive, threshold)


def label_metrics(y_true: np.ndarray, y_pred: np.ndarray, sensitive: pd.DataFrame) -> FairnessReport:
    """Fairness report of label predictions (e.g. a ThresholdOptimizer); ROC AUC is undefined, so NaN."""
    return _report(y_true, np.asarray(y_pred).astype(int), None, sensitive, None)


def fairness_gates(report: FairnessReport, params: FairnessParams) -> list[GateResult]:
    """Disparity gates per feature and intersection, over groups with at least ``min_group_size`` rows.

    Smaller groups stay in the report but are left out here: their rates are too noisy to block a model on.
    With fewer than two groups large enough, the gate cannot compare anything and passes, saying so.
    """
    return [result for feature in report.features for result in _feature_gates(feature, params)]


def columns_to_mitigate(report: FairnessReport, params: FairnessParams) -> tuple[str, ...]:
    """The sensitive columns whose own gates fail, or the intersection's columns when only the intersection fails.

    Mitigating on just these keeps groups large: per-group thresholds fitted on many small intersection groups are
    noisy and can widen the gaps of a feature that passed (seen on the Telco data for ``female``).
    """
    failing = [feature for feature in report.features if not all(r.passed for r in _feature_gates(feature, params))]
    singles = tuple(feature.columns[0] for feature in failing if len(feature.columns) == 1)
    return singles or (failing[0].columns if failing else ())


@dataclass(frozen=True)
class MitigatedModel:
    """A prefit model behind fairlearn's ThresholdOptimizer: group-specific thresholds chosen on the fit split.

    It outputs labels, not scores, and draws them at random where it mixes two thresholds: ``seed`` fixes that
    draw, so predictions are repeatable. ROC AUC and other score metrics are not defined for it.
    """

    optimizer: ThresholdOptimizer
    sensitive_columns: tuple[str, ...]
    seed: int

    def predict(self, X: pd.DataFrame, sensitive_features: pd.DataFrame) -> np.ndarray:
        """0/1 labels for raw rows ``X``, given their sensitive features (the same columns as at fit)."""
        groups = group_labels(sensitive_features, self.sensitive_columns).to_numpy()
        return np.asarray(self.optimizer.predict(X, sensitive_features=groups, random_state=self.seed)).astype(int)

    def thresholds(self) -> dict[str, dict[str, Any]]:
        """Per group, the two score thresholds it mixes and the share of rows each decides: the readable record.

        A fitted ThresholdOptimizer can't be saved with skops, so this and a refit from the same split are the record.
        With equalized odds, a share ``p_ignore`` of rows gets ``prediction_constant`` instead.
        """
        described = {}
        for group, rule in self.optimizer.interpolated_thresholder_.interpolation_dict.items():
            entry: dict[str, Any] = {}
            for index in (0, 1):
                operation = rule[f"operation{index}"]
                entry[f"p{index}"] = finite_or_none(rule[f"p{index}"])
                entry[f"rule{index}"] = f"score {operation.operator} {float(operation.threshold):.6g}"
                entry[f"threshold{index}"] = finite_or_none(operation.threshold)
            entry["p_ignore"] = finite_or_none(rule.get("p_ignore", 0.0))
            entry["prediction_constant"] = finite_or_none(rule.get("prediction_constant"))
            described[str(group)] = entry
        return described


def mitigate(
    model: Pipeline,
    X_fit: pd.DataFrame,
    y_fit: np.ndarray,
    sensitive_fit: pd.DataFrame,
    constraint: Literal["demographic_parity", "equalized_odds"],
    seed: int,
) -> MitigatedModel:
    """Fit a ThresholdOptimizer on an already fitted model; pass the validation split, never the test split.

    Thresholds are chosen per intersection group of the columns in ``sensitive_fit``: pass only those that need it
    (``columns_to_mitigate``).
    """
    from fairlearn.postprocessing import ThresholdOptimizer

    optimizer = ThresholdOptimizer(
        estimator=model,
        constraints=constraint,
        objective="accuracy_score",
        prefit=True,
        predict_method="predict_proba",
    )
    optimizer.fit(
        X_fit,
        np.asarray(y_fit).astype(int),
        sensitive_features=group_labels(sensitive_fit, sensitive_fit.columns).to_numpy(),
    )
    log.info("mitigation: ThresholdOptimizer (%s) fitted on %d rows", constraint, len(X_fit))
    return MitigatedModel(optimizer, tuple(sensitive_fit.columns), seed)


@dataclass(frozen=True, eq=False)
class MitigationResult:
    """Baseline vs mitigated on the same rows: the gaps it closes and the accuracy it costs."""

    baseline: FairnessReport
    mitigated: FairnessReport
    baseline_metrics: dict[str, float]
    mitigated_metrics: dict[str, float]

    @property
    def accuracy_cost(self) -> float:
        """Accuracy lost by mitigating (positive means the mitigated model is less accurate)."""
        return self.baseline_metrics["accuracy"] - self.mitigated_metrics["accuracy"]

    def gaps(self) -> pd.DataFrame:
        """Per feature: each disparity before and after mitigation."""
        rows = []
        for before, after in zip(self.baseline.features, self.mitigated.features, strict=True):
            for metric in ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference"):
                rows.append(
                    {
                        "feature": before.name,
                        "metric": metric,
                        "baseline": getattr(before, metric),
                        "mitigated": getattr(after, metric),
                    }
                )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy_cost": finite_or_none(self.accuracy_cost),
            "baseline_metrics": {key: finite_or_none(value) for key, value in self.baseline_metrics.items()},
            "mitigated_metrics": {key: finite_or_none(value) for key, value in self.mitigated_metrics.items()},
            "gaps": [
                {key: finite_or_none(value) if isinstance(value, float) else value for key, value in row.items()}
                for row in self.gaps().to_dict(orient="records")
            ],
            "baseline": self.baseline.to_dict(),
            "mitigated": self.mitigated.to_dict(),
        }


def evaluate_mitigation(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    mitigated_pred: np.ndarray,
    sensitive: pd.DataFrame,
) -> MitigationResult:
    """Compare the original model (scores at ``threshold``) with the mitigated labels on the same test rows."""
    y_true = np.asarray(y_true).astype(int)
    baseline_pred = (np.asarray(scores, dtype=float) >= threshold).astype(int)
    mitigated_pred = np.asarray(mitigated_pred).astype(int)
    result = MitigationResult(
        baseline=group_metrics(y_true, scores, threshold, sensitive),
        mitigated=label_metrics(y_true, mitigated_pred, sensitive),
        baseline_metrics=_label_scores(y_true, baseline_pred),
        mitigated_metrics=_label_scores(y_true, mitigated_pred),
    )
    log.info("mitigation costs %.4f accuracy", result.accuracy_cost)
    return result


@dataclass(frozen=True, eq=False)
class FairnessAssessment:
    """The fairness stage's outcome: the gates, the group table (mitigated rows included) and fairness.json."""

    gates: GateReport
    table: pd.DataFrame  # model, feature, group and GROUP_METRICS per group
    payload: dict[str, Any]  # reports/fairness.json

    def table_rows(self) -> list[dict[str, Any]]:
        """The table as JSON-safe rows (NaN as None)."""
        return [
            {key: finite_or_none(value) if isinstance(value, float) else value for key, value in row.items()}
            for row in self.table.to_dict("records")
        ]


def assess_fairness(
    metrics: Mapping[str, Any],
    candidate: Path,
    test: pd.DataFrame,
    valid: pd.DataFrame,
    data: DataParams,
    settings: FairnessParams,
    seed: int,
) -> FairnessAssessment:
    """Group metrics of the selected, calibrated candidate at its threshold (metrics.json) on the test split, and the
    gates.

    Whether to mitigate, and on which columns, is decided on the validation split (its gates fail with
    fairness.mitigate on); the ThresholdOptimizer is fitted there too and reported on the test split next to the
    original. It is reported, not registered (see NOT_REGISTERED).
    """
    family = metrics["selected"]
    threshold = metrics["threshold"]
    sensitive = list(data.sensitive_features)
    payload: dict[str, Any] = {"model": family, "threshold": threshold, "sensitive_features": sensitive}
    table = pd.DataFrame(columns=["model", "feature", "group", *GROUP_METRICS])
    if not sensitive:
        gates = GateReport(())
        payload.update(report=None, mitigation=None, note="no data.sensitive_features declared; nothing to check")
    else:
        model, _ = load_candidate(candidate)
        y_test, scores = labels(test, data), model.predict_proba(test)[:, 1]
        report = group_metrics(y_test, scores, threshold, test[sensitive])
        gates = GateReport(tuple(fairness_gates(report, settings)))
        table = report.table().assign(model=family)
        payload.update(report=report.to_dict(), mitigation=None)
        y_valid = labels(valid, data)
        on_valid = group_metrics(y_valid, model.predict_proba(valid)[:, 1], threshold, valid[sensitive])
        valid_gates = GateReport(tuple(fairness_gates(on_valid, settings)))
        payload["mitigation_decided_on"] = {"data": "valid", "rows": len(valid), "gates": valid_gates.message()}
        if not valid_gates.passed and settings.mitigate:
            columns = columns_to_mitigate(on_valid, settings)
            fitted = mitigate(model, valid, y_valid, valid[list(columns)], settings.constraint, seed)
            result = evaluate_mitigation(y_test, scores, threshold, fitted.predict(test, test), test[sensitive])
            after = GateReport(tuple(fairness_gates(result.mitigated, settings)))
            name = f"{family}+{settings.mitigation}"
            table = pd.concat([table, result.mitigated.table().assign(model=name)], ignore_index=True)
            payload["mitigation"] = {
                "model": name,
                "columns": list(columns),
                "constraint": settings.constraint,
                "fitted_on": "valid",
                "thresholds": fitted.thresholds(),
                "gates": after.to_dict(),
                "registered": False,
                "note": NOT_REGISTERED,
                **result.to_dict(),
            }
            log.info(
                "mitigated on %s (%s): accuracy cost %.4f; gates after: %s",
                columns,
                settings.constraint,
                result.accuracy_cost,
                after.message(),
            )
    payload.update(passed=gates.passed, message=gates.message(), gates=[r.to_dict() for r in gates.results])
    return FairnessAssessment(gates, table[["model", "feature", "group", *GROUP_METRICS]], payload)


def _report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray | None,
    sensitive: pd.DataFrame,
    threshold: float | None,
) -> FairnessReport:
    from fairlearn.metrics import demographic_parity_difference, demographic_parity_ratio, equalized_odds_difference

    y_true = np.asarray(y_true).astype(int)
    if len(y_true) != len(y_pred) or len(y_true) != len(sensitive):
        raise ValueError(f"lengths differ: y_true {len(y_true)}, predictions {len(y_pred)}, sensitive {len(sensitive)}")
    if sensitive.shape[1] == 0:
        raise ValueError("no sensitive feature columns given")
    specs: list[tuple[str, ...]] = [(column,) for column in sensitive.columns]
    if sensitive.shape[1] > 1:
        specs.append(tuple(sensitive.columns))
    features = []
    for columns in specs:
        by = group_labels(sensitive, columns).to_numpy()
        features.append(
            FeatureFairness(
                name=" & ".join(columns),
                columns=columns,
                groups=per_group(y_true, y_pred, by, scores)[list(GROUP_METRICS)],
                demographic_parity_difference=float(
                    demographic_parity_difference(y_true, y_pred, sensitive_features=by)
                ),
                demographic_parity_ratio=float(demographic_parity_ratio(y_true, y_pred, sensitive_features=by)),
                equalized_odds_difference=float(equalized_odds_difference(y_true, y_pred, sensitive_features=by)),
            )
        )
    totals = overall(y_true, y_pred, scores)
    return FairnessReport(
        threshold=threshold, overall={name: totals[name] for name in GROUP_METRICS}, features=tuple(features)
    )


def _feature_gates(feature: FeatureFairness, params: FairnessParams) -> list[GateResult]:
    eligible = feature.groups[feature.groups["count"] >= params.min_group_size]
    excluded = sorted(set(feature.groups.index) - set(eligible.index))
    note = f"excluded groups under {params.min_group_size} rows: {excluded}" if excluded else ""
    observed = _disparities(eligible)
    results = []
    for metric, threshold, compare in (
        ("demographic_parity_difference", params.max_demographic_parity_difference, at_most),
        ("demographic_parity_ratio", params.min_demographic_parity_ratio, at_least),
        ("equalized_odds_difference", params.max_equalized_odds_difference, at_most),
    ):
        if threshold is None:
            continue
        result = compare("fairness", f"{metric}[{feature.name}]", observed[metric], threshold, note)
        if len(eligible) < 2:
            detail = f"fewer than 2 groups with >= {params.min_group_size} rows; not checked"
            result = replace(result, observed=None, passed=True, detail=detail)
        results.append(result)
    return results


def _disparities(groups: pd.DataFrame) -> dict[str, float]:
    """The fairlearn "between groups" disparities, recomputed over a subset of groups (NaN rates ignored)."""
    selection = groups["selection_rate"].dropna()
    top, bottom = (selection.max(), selection.min()) if len(selection) else (np.nan, np.nan)
    spreads = [groups[rate].max() - groups[rate].min() for rate in ("tpr", "fpr") if groups[rate].notna().sum() >= 2]
    return {
        "demographic_parity_difference": float(top - bottom),
        "demographic_parity_ratio": float(bottom / top) if top > 0 else 1.0,
        "equalized_odds_difference": float(max(spreads)) if spreads else math.nan,
    }


def _label_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    totals = overall(y_true, y_pred)
    return {name: totals[name] for name in ("accuracy", "f1", "selection_rate")}
