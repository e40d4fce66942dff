"""The retraining decision: triggers, cool-down (batches and hours), severe drift, minimum new rows, data window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from optiflow.config import MonitorParams
from optiflow.monitoring.retraining import Signals, concept_change, concept_triggers, decide, window_batches

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
PARAMS = MonitorParams(
    drift_share=0.1,
    severe_drift_share=0.4,
    max_quality_drop=0.05,
    cooldown_batches=2,
    cooldown_hours=24,
    min_new_rows=500,
)


def history(*rows: tuple[str, str, int, float]) -> pd.DataFrame:
    """(batch id, decision, labelled rows, hours before NOW) per earlier batch, oldest first."""
    return pd.DataFrame(
        [
            {"batch_id": b, "decision": d, "labelled_rows": n, "at": (NOW - timedelta(hours=h)).isoformat()}
            for b, d, n, h in rows
        ],
        columns=["batch_id", "decision", "labelled_rows", "at"],
    )


EMPTY = history()
CALM = Signals(drift_share=0.0, prediction_drift=0.02, quality_drop=0.01, labelled_rows=1000)


def test_undrifted_batch_triggers_nothing_and_says_why() -> None:
    verdict = decide(CALM, EMPTY, PARAMS, NOW)
    assert verdict.action == "ignored" and verdict.triggers == ()
    assert "drift share 0.000 < 0.1" in verdict.reason and "ROC AUC drop 0.010 < 0.05" in verdict.reason


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        (Signals(drift_share=0.2, drifted_columns=("tenure", "contract"), labelled_rows=1000), "tenure, contract"),
        (Signals(drift_share=0.0, prediction_drift=0.3, prediction_drifted=True, labelled_rows=1000), "prediction"),
        (Signals(drift_share=0.0, quality_drop=0.08, labelled_rows=1000), "ROC AUC dropped 0.080"),
    ],
)
def test_each_trigger_alone_retrains(signals: Signals, expected: str) -> None:
    verdict = decide(signals, EMPTY, PARAMS, NOW)
    assert verdict.action == "retrain" and expected in verdict.reason


def test_prediction_drift_can_be_switched_off() -> None:
    signals = Signals(drift_share=0.0, prediction_drift=0.3, prediction_drifted=True, labelled_rows=1000)
    params = PARAMS.model_copy(update={"retrain_on_prediction_drift": False})
    assert decide(signals, EMPTY, params, NOW).action == "ignored"


def test_cooldown_in_batches_suppresses_a_second_trigger() -> None:
    drifted = Signals(drift_share=0.2, drifted_columns=("tenure",), labelled_rows=1000)
    earlier = history(("b1", "promoted", 1000, 100))
    verdict = decide(drifted, earlier, PARAMS, NOW)
    assert verdict.action == "debounced" and "1 batch(es) ago" in verdict.reason
    later = history(("b1", "promoted", 1000, 100), ("b2", "ignored", 0, 90), ("b3", "ignored", 0, 80))
    assert decide(drifted, later, PARAMS, NOW).action == "retrain"


def test_cooldown_in_hours_suppresses_even_after_enough_batches() -> None:
    drifted = Signals(drift_share=0.2, labelled_rows=1000)
    earlier = history(("b1", "rejected", 1000, 5), ("b2", "ignored", 0, 4), ("b3", "ignored", 0, 3))
    verdict = decide(drifted, earlier, PARAMS, NOW)
    assert verdict.action == "debounced" and "5.0 h ago" in verdict.reason


def test_severe_drift_overrides_the_cooldown_and_says_so() -> None:
    severe = Signals(drift_share=0.5, labelled_rows=1000)
    verdict = decide(severe, history(("b1", "retrained", 1000, 1)), PARAMS, NOW)
    assert verdict.action == "retrain" and verdict.severe and "overrides the cool-down" in verdict.reason


def test_minimum_new_rows_counts_labelled_rows_since_the_last_retraining() -> None:
    drifted = Signals(drift_share=0.2, labelled_rows=200)
    verdict = decide(drifted, EMPTY, PARAMS, NOW)
    assert verdict.action == "debounced" and "only 200 new labelled rows" in verdict.reason
    # 200 now + 400 from a batch after the last retraining; the 1000 before it and the invalid batch do not count
    earlier = history(
        ("b1", "promoted", 1000, 100), ("b2", "ignored", 400, 90), ("b3", "invalid", 900, 80), ("b4", "ignored", 0, 70)
    )
    assert decide(drifted, earlier, PARAMS, NOW).action == "retrain"


def test_unlabelled_drifted_batch_waits_for_labelled_rows() -> None:
    verdict = decide(Signals(drift_share=0.5, labelled_rows=0), EMPTY, PARAMS, NOW)
    assert verdict.action == "debounced" and "only 0 new labelled rows" in verdict.reason


def test_data_window_policies() -> None:
    earlier = history(
        ("b1", "ignored", 100, 9),
        ("b2", "promoted", 100, 8),
        ("b3", "ignored", 0, 7),
        ("b4", "invalid", 100, 6),
        ("b5", "debounced", 100, 5),
    )
    assert window_batches(earlier, "b6", "all", 3) == (True, ["b1", "b2", "b5", "b6"])
    assert window_batches(earlier, "b6", "last_k", 2) == (False, ["b5", "b6"])
    assert window_batches(earlier, "b6", "training_plus_labelled", 3) == (True, ["b5", "b6"])
    assert window_batches(EMPTY, "b1", "training_plus_labelled", 3) == (True, ["b1"])


def test_a_quarantined_batch_retrains_nothing_however_drifted() -> None:
    broken = Signals(drift_share=0.9, labelled_rows=1000, quarantine=("column 'tenure': mean size 2.5 against 30",))
    verdict = decide(broken, EMPTY, PARAMS, NOW)
    assert verdict.action == "quarantined" and "tenure" in verdict.reason and "quarantine release" in verdict.reason


def test_quarantined_and_dropped_batches_never_join_a_window_but_released_ones_do() -> None:
    earlier = history(
        ("b1", "quarantined", 100, 4),
        ("b2", "dropped", 100, 3),
        ("b3", "released", 100, 2),
        ("b4", "invalid", 100, 1),
    )
    assert window_batches(earlier, "b5", "all", 3) == (True, ["b3", "b5"])
    verdict = decide(Signals(drift_share=0.5, labelled_rows=350), earlier, PARAMS, NOW)
    assert verdict.action == "debounced" and "only 450 new labelled rows" in verdict.reason  # b3 counts, not b1/b2/b4


def test_severe_threshold_below_the_trigger_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"severe_drift_share 0\.05 is below drift_share 0\.1"):
        MonitorParams(drift_share=0.1, severe_drift_share=0.05)


def test_prediction_drift_is_reported_with_the_test_that_found_it() -> None:
    drifted = Signals(
        drift_share=0.0,
        prediction_drift=1e-9,
        prediction_drifted=True,
        labelled_rows=1000,
        prediction_test="ks p < 5e-05",
    )
    verdict = decide(drifted, EMPTY, PARAMS, NOW)
    assert verdict.action == "retrain" and verdict.reason == "prediction drift 1e-09 (ks p < 5e-05)"


def diagnosed(*rows: tuple[str, str, int, str | None]) -> pd.DataFrame:
    """(batch id, decision, labelled rows, diagnosed shift) per earlier batch, oldest first, an hour apart."""
    frame = history(*((b, d, n, 48 - i) for i, (b, d, n, _) in enumerate(rows)))
    return frame.assign(shift=[shift for *_, shift in rows])


def test_two_concept_batches_in_a_row_confirm_a_change_and_the_window_starts_there() -> None:
    earlier = diagnosed(
        ("b1", "ignored", 600, "none"),
        ("b2", "ignored", 600, "concept"),  # alone: chance
        ("b3", "ignored", 600, "none"),
        ("b4", "ignored", 600, "concept"),
        ("b5", "ignored", 0, None),  # labels not in yet: neither breaks nor extends the run
        ("b6", "debounced", 600, "concept"),
        ("b7", "ignored", 600, "none"),
    )
    assert concept_change(earlier) == 3
    for policy in ("all", "training_plus_labelled", "last_k"):  # older labels answer the old question
        assert window_batches(earlier, "b8", policy, 10) == (False, ["b4", "b6", "b7", "b8"])
    assert window_batches(earlier, "b8", "last_k", 2) == (False, ["b7", "b8"])
    assert concept_change(earlier.assign(shift=earlier["shift"].replace("concept", "prior"))) is None


def test_a_confirmed_concept_shift_retrains_while_it_is_still_diagnosed() -> None:
    earlier = diagnosed(
        ("b1", "ignored", 600, "none"), ("b2", "ignored", 600, "concept"), ("b3", "ignored", 600, "concept")
    )
    verdict = decide(CALM, earlier, PARAMS, NOW)  # no drift, no drop against its own reference
    assert verdict.action == "retrain" and "concept shift since batch b2 (still diagnosed on b3)" in verdict.reason
    later = [("b4", "retrained", 600, "concept"), ("b5", "ignored", 0, None)]  # labels of b5 not in yet
    assert concept_triggers(pd.concat([earlier, diagnosed(*later)], ignore_index=True))  # b4 still concept
    recovered = diagnosed(("b4", "retrained", 600, "concept"), ("b5", "ignored", 600, "none"))
    settled = pd.concat([earlier, recovered], ignore_index=True)
    assert concept_triggers(settled) == [] and concept_change(settled) == 1  # the window still starts at b2
    assert concept_triggers(diagnosed(("b1", "ignored", 600, "concept"))) == []  # one batch can be chance
