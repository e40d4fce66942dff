"""optiflow/timing.py: timing a call with native thread pools capped leaves them as they were, so a stage that times
variants (compress) does not change the numbers of the stages after it in the same process (the Prefect flow runs
every stage in one process; `dvc repro` runs each in its own)."""

from __future__ import annotations

import hashlib

import numpy as np

from optiflow.modeling.mlp import TorchMLPClassifier
from optiflow.timing import call_seconds


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
