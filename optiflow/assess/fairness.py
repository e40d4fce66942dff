"""Group fairness with fairlearn: metrics per sensitive group, disparity gates, and threshold-optimizer mitigation.

Groups come from each sensitive feature alone and from their intersection, where gaps hide most often; a numeric
sensitive feature (an age) is binned and a missing value is its own group (optiflow.assess.groups). A group too
small to judge, or empty in the split, is reported with its size and left out of the gate, which names the groups it
judged; with fewer than two groups to compare, or no sensitive feature at all, the gate is "not evaluated".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from optiflow.assess.gates import Comparison, GateReport, GateResult, at_least, at_most, not_evaluated
from optiflow.assess.groups import Bins, bin_edges, every_group, group_labels, overall, per_group
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
    bins: Bins | None = None  # the edges numeric sensitive features were cut at

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
            "bins": {column: list(edges) for column, edges in (self.bins or {}).items()},
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


def group_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float, sensitive: pd.DataFrame, bins: Bins | None = None
) -> FairnessReport:
    """Fairness report of a scoring model: labels are ``scores >= threshold``; ROC AUC uses the scores."""
    scores = np.asarray(scores, dtype=float)
    return _report(y_true, (scores >= threshold).astype(int), scores, sensitive, threshold, bins)


def label_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, sensitive: pd.DataFrame, bins: Bins | None = None
) -> FairnessReport:
    """Fairness report of label predictions (e.g. a ThresholdOptimizer); ROC AUC is undefined, so NaN."""
    return _report(y_true, np.asarray(y_pred).astype(int), None, sensitive, None, bins)


def fairness_gates(report: FairnessReport, params: FairnessParams) -> list[GateResult]:
    """Disparity gates per feature and intersection, over groups with at least ``min_group_size`` rows.

    Smaller groups (and empty intersections) stay in the report but are left out here, "too small to judge": their
    rates are too noisy to block a model on. Each result names the groups it judged and those it could not; with
    fewer than two groups large enough, the gate cannot compare anything and is not evaluated.
    """
    return [result for feature in report.features for result in _feature_gates(feature, params)]


def unchecked_gates(params: FairnessParams, reason: str) -> list[GateResult]:
    """One not-evaluated result per active disparity gate, for a run with nothing to compare."""
    return [
        not_evaluated("fairness", metric, threshold, compare, reason) for metric, threshold, compare in _gates(params)
    ]


def judged_groups(feature: FeatureFairness, min_size: int) -> tuple[dict[str, int], dict[str, int]]:
    """(groups large enough to judge, groups too small to judge), each group with its number of rows."""
    counts = feature.groups["count"].astype(int)
    judged = {str(group): int(n) for group, n in counts.items() if n >= min_size}
    return judged, {str(group): int(n) for group, n in counts.items() if n < min_size}


def columns_to_mitigate(report: FairnessReport, params: FairnessParams) -> tuple[str, ...]:
    """The sensitive columns whose own gates fail, or the intersection's columns when only the intersection fails.

    Mitigating on just these keeps groups large: per-group thresholds fitted on many small intersection groups are
    noisy and can widen the gaps of a feature that passed (seen on the Telco data for ``female``).
    """
    failing = [feature for feature in report.features if _failed(_feature_gates(feature, params))]
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
    bins: Bins | None = None

    def predict(self, X: pd.DataFrame, sensitive_features: pd.DataFrame) -> np.ndarray:
        """0/1 labels for raw rows ``X``, given their sensitive features (the same columns as at fit)."""
        groups = group_labels(sensitive_features, self.sensitive_columns, self.bins).to_numpy()
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
    bins: Bins | None = None,
) -> MitigatedModel:
    """Fit a ThresholdOptimizer on an already fitted model; pass the validation split, never the test split.

    Thresholds are chosen per intersection group of the columns in ``sensitive_fit``: pass only those that need it
    (``columns_to_mitigate``), and check ``mitigation_blocker`` first (every group needs both classes).
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
        sensitive_features=group_labels(sensitive_fit, sensitive_fit.columns, bins).to_numpy(),
    )
    log.info("mitigation: ThresholdOptimizer (%s) fitted on %d rows", constraint, len(X_fit))
    return MitigatedModel(optimizer, tuple(sensitive_fit.columns), seed, bins)


def mitigation_blocker(
    y_fit: np.ndarray, sensitive_fit: pd.DataFrame, sensitive_apply: pd.DataFrame, min_size: int, bins: Bins | None
) -> str | None:
    """Why group thresholds cannot be fitted on these rows, or None: each group needs ``min_size`` rows holding
    both classes in the fit split, and every group it is applied to must have been fitted."""
    columns = list(sensitive_fit.columns)
    fit_groups = group_labels(sensitive_fit, columns, bins)
    counts = pd.crosstab(fit_groups, np.asarray(y_fit).astype(int)).reindex(columns=[0, 1], fill_value=0)
    thin = {str(group): int(row.sum()) for group, row in counts.iterrows() if row.sum() < min_size or row.min() == 0}
    unseen = sorted(set(group_labels(sensitive_apply, columns, bins)) - set(fit_groups))
    if thin:
        return f"groups too small or holding one class in the validation split: {_sized(thin)}"
    if unseen:
        return f"groups of the test split absent from the validation split: {unseen}"
    return None


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
    bins: Bins | None = None,
) -> MitigationResult:
    """Compare the original model (scores at ``threshold``) with the mitigated labels on the same test rows."""
    y_true = np.asarray(y_true).astype(int)
    baseline_pred = (np.asarray(scores, dtype=float) >= threshold).astype(int)
    mitigated_pred = np.asarray(mitigated_pred).astype(int)
    result = MitigationResult(
        baseline=group_metrics(y_true, scores, threshold, sensitive, bins),
        mitigated=label_metrics(y_true, mitigated_pred, sensitive, bins),
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
        note = "no data.sensitive_features declared: nothing to compare (declare the columns to judge)"
        gates = GateReport(tuple(unchecked_gates(settings, note)))
        payload.update(report=None, mitigation=None, bins={}, groups={}, note=note)
    else:
        model, _ = load_candidate(candidate)
        y_test, scores = labels(test, data), model.predict_proba(test)[:, 1]
        bins = bin_edges(test, sensitive, data.groups)
        report = group_metrics(y_test, scores, threshold, test[sensitive], bins)
        gates = GateReport(tuple(fairness_gates(report, settings)))
        table = report.table().assign(model=family)
        payload.update(
            report=report.to_dict(),
            mitigation=None,
            bins={column: list(edges) for column, edges in bins.items()},
            groups=_judged_payload(report, settings.min_group_size),
        )
        y_valid = labels(valid, data)
        on_valid = group_metrics(y_valid, model.predict_proba(valid)[:, 1], threshold, valid[sensitive], bins)
        valid_gates = GateReport(tuple(fairness_gates(on_valid, settings)))
        payload["mitigation_decided_on"] = {"data": "valid", "rows": len(valid), "gates": valid_gates.message()}
        if _failed(valid_gates.results) and settings.mitigate:
            columns = columns_to_mitigate(on_valid, settings)
            blocker = mitigation_blocker(
                y_valid, valid[list(columns)], test[list(columns)], settings.min_group_size, bins
            )
            if blocker is not None:
                payload["mitigation"] = {"columns": list(columns), "fitted": False, "note": f"not fitted: {blocker}"}
                log.info("mitigation on %s not fitted: %s", columns, blocker)
            else:
                fitted = mitigate(model, valid, y_valid, valid[list(columns)], settings.constraint, seed, bins)
                result = evaluate_mitigation(
                    y_test, scores, threshold, fitted.predict(test, test), test[sensitive], bins
                )
                after = GateReport(tuple(fairness_gates(result.mitigated, settings)))
                name = f"{family}+{settings.mitigation}"
                table = pd.concat([table, result.mitigated.table().assign(model=name)], ignore_index=True)
                payload["mitigation"] = {
                    "model": name,
                    "columns": list(columns),
                    "fitted": True,
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


def _judged_payload(report: FairnessReport, min_size: int) -> dict[str, dict[str, dict[str, int]]]:
    payload = {}
    for feature in report.features:
        judged, too_small = judged_groups(feature, min_size)
        payload[feature.name] = {"judged": judged, "too_small_to_judge": too_small}
    return payload


def _failed(results: Sequence[GateResult]) -> bool:
    """Whether a gate that did check something failed (a not-evaluated one is no reason to mitigate)."""
    return any(result.evaluated and not result.passed for result in results)


def _report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray | None,
    sensitive: pd.DataFrame,
    threshold: float | None,
    bins: Bins | None = None,
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
        by = group_labels(sensitive, columns, bins).to_numpy()
        groups = per_group(y_true, y_pred, by, scores, expected=every_group(sensitive, columns, bins))
        features.append(
            FeatureFairness(
                name=" & ".join(columns),
                columns=columns,
                groups=groups[list(GROUP_METRICS)],
                demographic_parity_difference=float(
                    demographic_parity_difference(y_true, y_pred, sensitive_features=by)
                ),
                demographic_parity_ratio=float(demographic_parity_ratio(y_true, y_pred, sensitive_features=by)),
                equalized_odds_difference=float(equalized_odds_difference(y_true, y_pred, sensitive_features=by)),
            )
        )
    totals = overall(y_true, y_pred, scores)
    return FairnessReport(
        threshold=threshold,
        overall={name: totals[name] for name in GROUP_METRICS},
        features=tuple(features),
        bins=dict(bins or {}),
    )


def _gates(params: FairnessParams) -> list[tuple[str, float, Comparison]]:
    """The active disparity gates: (metric, threshold, comparison); a threshold set to null switches one off."""
    gates: tuple[tuple[str, float | None, Comparison], ...] = (
        ("demographic_parity_difference", params.max_demographic_parity_difference, "<="),
        ("demographic_parity_ratio", params.min_demographic_parity_ratio, ">="),
        ("equalized_odds_difference", params.max_equalized_odds_difference, "<="),
    )
    return [(metric, threshold, comparison) for metric, threshold, comparison in gates if threshold is not None]


def _feature_gates(feature: FeatureFairness, params: FairnessParams) -> list[GateResult]:
    judged, too_small = judged_groups(feature, params.min_group_size)
    eligible = feature.groups.loc[list(judged)]
    detail = f"judged {len(judged)} group(s) with >= {params.min_group_size} rows: {_listed(list(judged))}"
    if too_small:
        detail += f"; too small to judge: {_sized(too_small)}"
    observed = _disparities(eligible)
    results = []
    for metric, threshold, comparison in _gates(params):
        name = f"{metric}[{feature.name}]"
        if len(judged) < 2:
            reason = f"fewer than 2 groups with >= {params.min_group_size} rows to compare ({detail})"
            results.append(not_evaluated("fairness", name, threshold, comparison, reason))
            continue
        compare = at_least if comparison == ">=" else at_most
        results.append(compare("fairness", name, observed[metric], threshold, detail))
    return results


_LISTED = 8  # groups named in a gate's detail; reports/fairness.json lists them all with their sizes


def _listed(groups: list[str]) -> str:
    """``sex=f, sex=m``: at most _LISTED group names."""
    more = len(groups) - _LISTED
    return ", ".join(groups[:_LISTED]) + (f" and {more} more (reports/fairness.json)" if more > 0 else "")


def _sized(groups: Mapping[str, int]) -> str:
    """``sex=f (412), sex=m (388)``: groups with their sizes, at most _LISTED of them."""
    shown = [f"{group} ({size})" for group, size in list(groups.items())[:_LISTED]]
    more = len(groups) - _LISTED
    return ", ".join(shown) + (f" and {more} more (reports/fairness.json)" if more > 0 else "") if groups else "none"


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
