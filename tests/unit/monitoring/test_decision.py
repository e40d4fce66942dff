"""The cost-aware retraining decision: noise triggers nothing, drift without a costly drop alerts, a costly drop
retrains (within the cool-down and new-rows rules), and every verdict records its figures."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from optiflow.config import MonitorParams
from optiflow.monitoring.decision import decide_on_impact, expected_loss
from optiflow.monitoring.performance import Impact
from optiflow.monitoring.retraining import Signals

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
PARAMS = MonitorParams(
    drift_share=0.1, cooldown_batches=2, cooldown_hours=0, min_new_rows=500, point_value=0.01,
    rows_until_retrain=100_000, retrain_cost=500.0, noise_z=2.0,
)  # fmt: skip
EMPTY = pd.DataFrame(columns=["batch_id", "decision", "labelled_rows", "at"])
CALM = Signals(drift_share=0.0, labelled_rows=1000)
DRIFTED = Signals(drift_share=0.2, drifted_columns=("tenure", "contract"), labelled_rows=1000)


def impact(drop: float, se: float = 0.01) -> Impact:
    return Impact("roc_auc", "estimated", 0.84, 0.84 - drop, se, PARAMS.noise_z)


def test_a_drop_within_its_standard_error_triggers_nothing() -> None:
    verdict = decide_on_impact(CALM, impact(0.015), EMPTY, PARAMS, NOW)
    assert verdict.action == "ignored" and "within noise" in verdict.reason
    assert verdict.figures["expected_loss"] == 0.0 and verdict.figures["significant"] is False


def test_drift_without_a_costly_drop_raises_an_alert_not_a_retrain() -> None:
    verdict = decide_on_impact(DRIFTED, impact(0.0), EMPTY, PARAMS, NOW)
    assert verdict.action == "alert" and "tenure, contract" in verdict.reason


def test_a_costly_drop_retrains_and_records_its_figures() -> None:
    verdict = decide_on_impact(CALM, impact(0.05), EMPTY, PARAMS, NOW)
    assert verdict.action == "retrain"
    # 5 points x 0.01 per row x 100,000 rows = 5,000 > 500
    assert verdict.figures["expected_loss"] == expected_loss(impact(0.05), PARAMS) == pytest.approx(5000.0)
    assert verdict.figures["drop"] == pytest.approx(0.05) and verdict.figures["retrain_cost"] == 500.0


def test_a_significant_drop_cheaper_than_a_retrain_alerts_only() -> None:
    cheap = PARAMS.model_copy(update={"rows_until_retrain": 1000})
    verdict = decide_on_impact(DRIFTED, impact(0.05), EMPTY, cheap, NOW)
    assert verdict.action == "alert" and "expected loss until the scheduled retrain 50.0 <= retrain cost 500" in (
        verdict.reason
    )


def test_cool_down_and_new_rows_still_hold() -> None:
    recent = pd.DataFrame([{"batch_id": "a", "decision": "promoted", "labelled_rows": 1000, "at": NOW.isoformat()}])
    assert decide_on_impact(CALM, impact(0.05), recent, PARAMS, NOW).action == "debounced"
    few = Signals(drift_share=0.0, labelled_rows=100)
    verdict = decide_on_impact(few, impact(0.05), EMPTY, PARAMS, NOW)
    assert verdict.action == "debounced" and "only 100 new labelled rows" in verdict.reason


def test_the_drift_trigger_keeps_the_old_rule() -> None:
    drift = PARAMS.model_copy(update={"trigger": "drift"})
    verdict = decide_on_impact(DRIFTED, impact(0.0), EMPTY, drift, NOW)
    assert verdict.action == "retrain" and "drift share 0.200" in verdict.reason and "expected_loss" in verdict.figures


def test_a_confirmed_concept_shift_retrains_without_a_costly_drop_and_says_so() -> None:
    earlier = pd.DataFrame(
        [
            {"batch_id": f"b{i}", "decision": "ignored", "labelled_rows": 600, "at": NOW.isoformat(), "shift": shift}
            for i, shift in enumerate(("none", "concept", "concept"))
        ]
    )
    earlier["at"] = [(NOW - pd.Timedelta(hours=48 - i)).isoformat() for i in range(3)]
    verdict = decide_on_impact(CALM, impact(0.0), earlier, PARAMS, NOW)
    assert verdict.action == "retrain"
    assert verdict.reason.startswith("concept shift since batch b1 (still diagnosed on b2)")
    assert "still diagnosed on b2" in verdict.figures["concept_shift"]
    assert decide_on_impact(CALM, impact(0.0), earlier.assign(shift="none"), PARAMS, NOW).action == "ignored"
