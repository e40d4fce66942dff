"""Promotion gates: every check a challenger must pass, each reported as observed vs threshold.

Gates never stop at the first failure: a person fixing a rejected model needs the whole list at once.
Every metric follows the "higher is better" convention of ``optiflow.config.HIGHER_IS_BETTER``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from optiflow.assess.paired import PairedComparison
from optiflow.config import HIGHER_IS_BETTER, ChampionGateParams, GateParams
from optiflow.io import finite_or_none

log = logging.getLogger(__name__)

Comparison = Literal["<=", ">=", ">"]


@dataclass(frozen=True)
class GateResult:
    """One check: ``observed`` compared with ``threshold``; ``observed`` is None when it could not be measured."""

    gate: str
    metric: str
    observed: float | None
    threshold: float | None
    comparison: Comparison
    passed: bool
    detail: str = ""

    def describe(self) -> str:
        text = f"{self.gate} {self.metric}: observed {_fmt(self.observed)} vs threshold {self.comparison} "
        text += _fmt(self.threshold)
        return f"{text} ({self.detail})" if self.detail else text

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN and infinities become null."""
        payload = asdict(self)
        for key in ("observed", "threshold"):
            payload[key] = finite_or_none(payload[key])
        return payload


@dataclass(frozen=True)
class GateReport:
    """All gate results of one challenger; it passes only when every result passes."""

    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> tuple[GateResult, ...]:
        return tuple(result for result in self.results if not result.passed)

    def message(self) -> str:
        """One message naming every failure, for logs, exceptions and the registration report."""
        if self.passed:
            return f"all {len(self.results)} gates passed"
        lines = [f"{len(self.failures)} of {len(self.results)} gates failed:"]
        lines += [f"  - {result.describe()}" for result in self.failures]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "message": self.message(),
            "results": [result.to_dict() for result in self.results],
        }


def at_least(gate: str, metric: str, observed: float | None, threshold: float, detail: str = "") -> GateResult:
    """Pass when ``observed >= threshold``; an unmeasured (None or NaN) value fails."""
    return _compare(gate, metric, observed, threshold, ">=", detail)


def at_most(gate: str, metric: str, observed: float | None, threshold: float, detail: str = "") -> GateResult:
    """Pass when ``observed <= threshold``; an unmeasured (None or NaN) value fails."""
    return _compare(gate, metric, observed, threshold, "<=", detail)


def quality_gates(metrics: Mapping[str, float], minimums: Mapping[str, float]) -> list[GateResult]:
    """Each metric named in ``min_quality`` must reach its minimum."""
    return [
        at_least("quality", metric, metrics.get(metric), minimum, "" if metric in metrics else "metric not measured")
        for metric, minimum in sorted(minimums.items())
    ]


def budget_gates(params: GateParams, latency_ms_per_1k_rows: float | None, model_bytes: int | None) -> list[GateResult]:
    """Latency and size stay within budget; a budget left unset in params is not checked."""
    results = []
    if params.max_latency_ms_per_1k_rows is not None:
        detail = "" if latency_ms_per_1k_rows is not None else "latency not measured"
        results.append(
            at_most(
                "budget", "latency_ms_per_1k_rows", latency_ms_per_1k_rows, params.max_latency_ms_per_1k_rows, detail
            )
        )
    if params.max_model_bytes is not None:
        detail = "" if model_bytes is not None else "size not measured"
        observed = float(model_bytes) if model_bytes is not None else None
        results.append(at_most("budget", "model_bytes", observed, float(params.max_model_bytes), detail))
    return results


def robustness_gates(params: GateParams, flip_rate: float | None, auc_drop: float | None) -> list[GateResult]:
    """Worst-case label flip rate and ROC AUC drop under bounded input perturbations (optiflow.assess.robustness)."""
    results = []
    if params.max_flip_rate is not None:
        detail = "search attack within the params bounds" if flip_rate is not None else "not measured"
        results.append(at_most("robustness", "flip_rate", flip_rate, params.max_flip_rate, detail))
    if params.max_auc_drop is not None:
        detail = "search attack within the params bounds" if auc_drop is not None else "not measured"
        results.append(at_most("robustness", "auc_drop", auc_drop, params.max_auc_drop, detail))
    return results


@dataclass(frozen=True)
class ChampionEvidence:
    """The challenger and the champion on the same holdout rows, none of which either trained on: the paired ROC AUC
    comparison, and each model's metrics there at its own threshold (for the guard tolerances)."""

    comparison: PairedComparison
    challenger: Mapping[str, float]
    champion: Mapping[str, float]


def comparison_gate(comparison: PairedComparison, settings: ChampionGateParams) -> GateResult:
    """Promote only when the interval's lower bound clears the bar: above 0 (shown better) with superiority,
    else above -margin (not worse by more than the margin)."""
    if settings.superiority:
        bar, comparison_sign, rule = 0.0, ">", "superiority: the challenger must be shown better"
    else:
        bar, comparison_sign = -settings.margin, ">="
        rule = f"non-inferiority: the challenger may not be worse by more than margin {settings.margin:g}"
    detail = f"{comparison.describe()}, on holdout rows neither model trained on; {rule}"
    return _compare("champion", "roc_auc_difference_lower_bound", comparison.low, bar, comparison_sign, detail)


def champion_gates(
    evidence: ChampionEvidence | None, settings: ChampionGateParams, guard_tolerances: Mapping[str, float]
) -> list[GateResult]:
    """The paired comparison gate, then no guard metric below the champion's - its tolerance (same rows).

    None means there is no champion yet (the first release): nothing to compare, so no champion gate; the
    promotion decision says so itself.
    """
    if evidence is None:
        return []
    results = [comparison_gate(evidence.comparison, settings)]
    rows = evidence.comparison.rows
    for metric, tolerance in sorted(guard_tolerances.items()):
        detail = f"champion - tolerance {tolerance:g}, both on the same {rows} holdout rows"
        results.append(_against_champion(evidence.challenger, evidence.champion, metric, -tolerance, detail))
    return results


def evaluate_gates(
    metrics: Mapping[str, float],
    params: GateParams,
    primary_metric: str,
    *,
    fairness: Sequence[GateResult] = (),
    latency_ms_per_1k_rows: float | None = None,
    model_bytes: int | None = None,
    champion: ChampionEvidence | None = None,
    flip_rate: float | None = None,
    auc_drop: float | None = None,
) -> GateReport:
    """Run every gate (quality, fairness, budget, robustness, champion) and collect all results, failed or not."""
    if primary_metric not in HIGHER_IS_BETTER:
        raise ValueError(f"primary metric {primary_metric!r} is not one of {list(HIGHER_IS_BETTER)}")
    results = [
        *quality_gates(metrics, params.min_quality),
        *fairness,
        *budget_gates(params, latency_ms_per_1k_rows, model_bytes),
        *robustness_gates(params, flip_rate, auc_drop),
        *champion_gates(champion, params.champion, params.guard_tolerances),
    ]
    report = GateReport(tuple(results))
    if report.passed:
        log.info("gates: %s", report.message())
    else:
        log.warning("gates: %s", report.message())
    return report


def _against_champion(
    challenger: Mapping[str, float], champion: Mapping[str, float], metric: str, margin: float, detail: str
) -> GateResult:
    reference = champion.get(metric)
    if reference is None or not math.isfinite(reference):
        return GateResult("champion", metric, challenger.get(metric), None, ">=", False, f"champion has no {metric}")
    return at_least("champion", metric, challenger.get(metric), reference + margin, detail)


def _compare(
    gate: str, metric: str, observed: float | None, threshold: float, comparison: Comparison, detail: str
) -> GateResult:
    value = finite_or_none(observed)
    if value is None:
        passed = False
        detail = detail or "not measured"
    else:
        passed = {">=": value >= threshold, "<=": value <= threshold, ">": value > threshold}[comparison]
    return GateResult(gate, metric, value, float(threshold), comparison, passed, detail)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"
