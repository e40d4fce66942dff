"""The cost-aware retraining decision: retrain only when the performance the model is losing costs more, until the
next scheduled retrain, than retraining does; drift that costs nothing raises an alert instead.

Expected loss of waiting = drop in ROC AUC points x `monitor.point_value` x `monitor.rows_until_retrain`; a drop
inside `monitor.noise_z` standard errors counts as none. The drop is the realised one when the batch's labels are
in, the estimated one before (optiflow.monitoring.performance). A confirmed concept shift still diagnosed is a
trigger of its own (optiflow.monitoring.retraining.concept_triggers). The cool-down, the severe-drift override and the
minimum of new labelled rows apply as in the drift rule (optiflow.monitoring.retraining), which
`monitor.trigger: drift` keeps. Every verdict carries the figures it weighed.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from optiflow.config import MonitorParams
from optiflow.monitoring.performance import Impact
from optiflow.monitoring.retraining import (
    RetrainingDecision,
    Signals,
    concept_triggers,
    cooldown,
    decide,
    drift_triggers,
    labelled_since_last_retraining,
)

POINT = 0.01  # one point of ROC AUC


def expected_loss(impact: Impact, params: MonitorParams) -> float:
    """What waiting for the scheduled retrain costs: a drop inside the noise costs nothing."""
    points = max(impact.drop, 0.0) / POINT if impact.significant else 0.0
    return points * params.point_value * params.rows_until_retrain


def decide_on_impact(
    signals: Signals, impact: Impact, history: pd.DataFrame, params: MonitorParams, now: datetime
) -> RetrainingDecision:
    """The verdict for one batch under `monitor.trigger`; ``history`` holds the earlier batches."""
    if params.trigger == "drift" or signals.quarantine:
        verdict = decide(signals, history, params, now)
        return RetrainingDecision(
            verdict.action, verdict.reason, verdict.triggers, verdict.severe, _figures(impact, params)
        )
    drift, concept = drift_triggers(signals, params), concept_triggers(history)
    figures = {**_figures(impact, params), "concept_shift": "; ".join(concept)}
    loss, cost = figures["expected_loss"], params.retrain_cost
    if not concept and (not impact.significant or loss <= cost):
        why = (
            f"{impact.describe()}: within noise"
            if not impact.significant
            else f"{impact.describe()}: expected loss until the scheduled retrain {loss:.1f} <= retrain cost {cost:g}"
        )
        if drift:
            return RetrainingDecision(
                "alert",
                f"drift without a costly performance drop: {'; '.join(drift)}; {why}",
                tuple(drift),
                False,
                figures,
            )
        return RetrainingDecision("ignored", f"no costly performance drop: {why}", (), False, figures)
    costly = impact.significant and loss > cost
    trigger = f"{impact.describe()}: expected loss {loss:.1f} {'>' if costly else '<='} retrain cost {cost:g}"
    triggers = (*concept, trigger, *drift)
    cause = "; ".join((*concept, trigger))
    severe = signals.drift_share >= params.severe_drift_share
    new_rows = signals.labelled_rows + labelled_since_last_retraining(history)
    if new_rows < params.min_new_rows:
        reason = (
            f"{cause}; but only {new_rows} new labelled rows since the last retraining "
            f"(monitor.min_new_rows {params.min_new_rows})"
        )
        return RetrainingDecision("debounced", reason, triggers, severe, figures)
    cooling = cooldown(history, params, now)
    if cooling and not severe:
        reason = f"{cause}; but {cooling} (cool-down; a drift share >= {params.severe_drift_share:g} would override it)"
        return RetrainingDecision("debounced", reason, triggers, severe, figures)
    override = f" (severe drift overrides the cool-down: {cooling})" if cooling else ""
    return RetrainingDecision("retrain", "; ".join(triggers) + override, triggers, severe, figures)


def _figures(impact: Impact, params: MonitorParams) -> dict[str, float | str | bool]:
    return {
        **impact.to_dict(),
        "expected_loss": expected_loss(impact, params),
        "retrain_cost": params.retrain_cost,
        "point_value": params.point_value,
        "rows_until_retrain": params.rows_until_retrain,
        "trigger": params.trigger,
    }
