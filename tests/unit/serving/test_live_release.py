"""The release verdicts on synthetic prediction logs: a paired comparison that waits for rows and labels, promotes a
challenger not worse than the margin, aborts one that errs or is shown worse (estimated or realised), and rolls back
a new champion that degrades against itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optiflow.config import ChampionGateParams, ReleaseParams
from optiflow.release.rollout import ReleaseState
from optiflow.serving.live_release import compare_live, decide_release, realised_auc, watch_champion
from optiflow.serving.prediction_log import CHAMPION
from tests.prediction_logs import synthetic_log, synthetic_scores

STATE = ReleaseState("churn", challenger="2", champion="1", mode="shadow", share=0.0, started_at=100.0)
RELEASE = ReleaseParams(min_rows=1000, min_labelled_rows=400, max_auc_drop=0.02, max_error_rate=0.01)
GATE = ChampionGateParams()


def _verdict(log: pd.DataFrame):
    comparison = compare_live(log, STATE, GATE, draws=100)
    return comparison, decide_release(comparison, RELEASE, GATE, noise_z=2.0, hours=1.0)


def test_too_few_rows_or_labels_waits_and_says_for_what() -> None:
    comparison, verdict = _verdict(synthetic_log(300, 1.5, 1.5, labelled=0))
    assert comparison.paired_rows == 300 and comparison.labelled_rows == 0 and comparison.realised is None
    assert verdict.action == "wait" and "300 of release.min_rows = 1000" in verdict.reason
    _, verdict = _verdict(synthetic_log(3000, 1.5, 1.5, labelled=100))
    assert verdict.action == "wait" and "100 labelled rows of release.min_labelled_rows = 400" in verdict.reason


def test_an_equal_or_better_challenger_is_promoted_on_the_realised_paired_test() -> None:
    comparison, verdict = _verdict(synthetic_log(4000, 1.5, 2.0, labelled=3000))
    assert comparison.realised is not None and comparison.realised.estimate > 0
    assert verdict.action == "promote" and "lower bound above -0.0100" in verdict.reason
    assert verdict.figures["realised"]["rows"] == 3000 and verdict.figures["labelled_rows"] == 3000
    assert 0.0 <= comparison.agreement <= 1.0 and comparison.challenger.answered == 0


def test_a_worse_challenger_is_aborted_on_labels_and_before_them_on_its_estimate() -> None:
    _, verdict = _verdict(synthetic_log(4000, 2.0, 0.8, labelled=3000))
    assert verdict.action == "abort" and "realised" in verdict.reason and "estimated" in verdict.reason
    _, verdict = _verdict(synthetic_log(4000, 2.0, 0.8, labelled=0))
    assert verdict.action == "abort" and verdict.reason.startswith("estimated ROC AUC drop")
    assert verdict.figures["estimated"]["drop"] < -0.02


def test_a_small_drop_inside_the_noise_aborts_nothing() -> None:
    _, verdict = _verdict(synthetic_log(1200, 1.5, 1.45, labelled=0, seed=3))
    assert verdict.action == "wait"


def test_a_challenger_that_errs_is_aborted_with_its_error_rate() -> None:
    comparison, verdict = _verdict(synthetic_log(2000, 1.5, 1.5, labelled=0, challenger_errors=60))
    assert comparison.challenger.errors == 60 and comparison.challenger.error_rate == pytest.approx(0.03)
    assert verdict.action == "abort" and "challenger error rate 3.00% > 1.00% (60 of 2000 calls)" in verdict.reason


def test_rows_logged_before_the_release_started_are_left_out() -> None:
    old = synthetic_log(5000, 1.5, 0.5, labelled=5000, at=50.0)
    comparison, _ = _verdict(pd.concat([old, synthetic_log(200, 1.5, 1.5, labelled=0)], ignore_index=True))
    assert comparison.paired_rows == 200


def _champion_rows(rows: int, signal: float, labelled: int, seed: int) -> pd.DataFrame:
    log = synthetic_log(rows, signal, signal, labelled, seed)
    return log[log["role"] == CHAMPION]


def test_a_new_champion_that_degrades_against_itself_is_rolled_back_and_a_steady_one_kept() -> None:
    before = _champion_rows(3000, 2.0, 3000, seed=1)
    steady = watch_champion(before, _champion_rows(3000, 2.0, 3000, seed=2), RELEASE, noise_z=2.0, draws=100)
    assert steady.action == "keep" and steady.reason == "no drop beyond its noise since promotion"
    worse = watch_champion(before, _champion_rows(3000, 0.7, 3000, seed=2), RELEASE, noise_z=2.0, draws=100)
    assert worse.action == "rollback" and "realised ROC AUC drop" in worse.reason
    assert worse.figures["realised"]["drop"] < -0.02


def test_realised_auc_standard_error_shrinks_with_rows() -> None:
    rng = np.random.default_rng(0)
    small, large = (rng.random(n) < 0.3 for n in (200, 20000))
    a = realised_auc(small.astype(int), synthetic_scores(rng, small, 1.5))
    b = realised_auc(large.astype(int), synthetic_scores(rng, large, 1.5))
    assert a["standard_error"] > 5 * b["standard_error"] and abs(a["estimate"] - b["estimate"]) < 0.08
    assert realised_auc(np.zeros(10, dtype=int), np.linspace(0, 1, 10)) is None


def test_a_direct_release_has_no_traffic_and_leaves_the_decision_to_the_gates_and_the_reviewer() -> None:
    empty = synthetic_log(10, 1.5, 1.5, labelled=0).iloc[0:0]
    direct = ReleaseState("churn", challenger="2", champion="1", mode="direct", share=0.0, started_at=0.0)
    comparison = compare_live(empty, direct, GATE)
    assert comparison.paired_rows == 0 and comparison.challenger.estimated_auc is None
    assert decide_release(comparison, RELEASE, GATE, noise_z=2.0, hours=1.0).action == "promote"
    only_champion = synthetic_log(50, 1.5, 1.5, labelled=0)
    comparison = compare_live(only_champion[only_champion["role"] == CHAMPION], STATE, GATE)
    assert comparison.paired_rows == 0 and decide_release(comparison, RELEASE, GATE, 2.0, hours=1.0).action == "wait"


def test_a_release_younger_than_its_minimum_hours_waits_whatever_its_rows() -> None:
    comparison = compare_live(synthetic_log(4000, 1.5, 2.0, labelled=3000), STATE, GATE, draws=100)
    patient = RELEASE.model_copy(update={"min_hours": 24.0})
    verdict = decide_release(comparison, patient, GATE, noise_z=2.0, hours=3.0)
    assert verdict.action == "wait" and verdict.reason == "running 3.0 h of release.min_hours = 24.0 h"
    assert decide_release(comparison, patient, GATE, noise_z=2.0, hours=25.0).action == "promote"
