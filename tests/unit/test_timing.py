"""optiflow/timing.py: timing a call with native thread pools capped leaves them as they were, so a stage that times
variants (compress) does not change the numbers of the stages after it in the same process (the Prefect flow runs
every stage in one process; `dvc repro` runs each in its own). Calls timed in turn pair by round, and a speed ratio
counts only when its interval clears 1x."""

from __future__ import annotations

import hashlib

import numpy as np

from optiflow.modeling.mlp import TorchMLPClassifier
from optiflow.timing import call_seconds, rotated_seconds, speedup


def test_capping_threads_for_a_timing_leaves_the_numbers_after_it_as_they_were() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1409, 46)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    model = TorchMLPClassifier(hidden_units=34, max_epochs=2, random_state=0).fit(X, y)

    def digest() -> str:
        return hashlib.sha256(model.predict_proba(X).tobytes()).hexdigest()

    before = digest()
    call_seconds(digest, repeats=2, threads=1)
    assert digest() == before


def test_calls_are_timed_in_turn_with_the_order_rotating_each_round() -> None:
    order: list[str] = []
    seconds = rotated_seconds(
        {name: lambda name=name: order.append(name) for name in "abc"}, repeats=3, warmup=1, threads=None
    )
    assert order == list("abc" + "abc" + "bca" + "cab")  # warm-up round, then each call leads one round
    assert {name: len(values) for name, values in seconds.items()} == {"a": 3, "b": 3, "c": 3}


def test_a_speedup_counts_only_when_its_interval_clears_one() -> None:
    rng = np.random.default_rng(0)
    spell = np.exp(rng.normal(0.0, 0.5, 30))  # the machine's slow spells, shared by both calls in a round
    baseline = 2.0 * spell * np.exp(rng.normal(0.0, 0.05, 30))
    faster = spell * np.exp(rng.normal(0.0, 0.05, 30))
    faster[:3] *= 50.0  # three stalled rounds move a mean, not the median
    gain = speedup(faster, baseline)
    assert gain.shown == 1 and 1.9 < gain.ratio < 2.1 and gain.low > 1.0 and gain.rounds == 30
    assert gain.inverse().shown == -1 and speedup(baseline, faster).shown == -1
    assert speedup(faster[:3], baseline[:3]).shown == 0  # three rounds cannot give a 95% interval


def test_equal_calls_are_told_apart_no_more_often_than_the_confidence_allows() -> None:
    rng = np.random.default_rng(1)
    shown = [speedup(*np.exp(rng.normal(0.0, 0.2, (2, 30)))).shown != 0 for _ in range(2000)]
    assert np.mean(shown) <= 0.05  # the median's binomial interval covers at least 95%
