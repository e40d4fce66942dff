"""After a concept shift, retraining recovers what can be recovered: once two labelled batches in a row are diagnosed
`concept`, the next retraining learns from the batches since the change only, and the model it gives beats the stale
one on the same later batches (rows neither model learnt from), by the margin the new labels allow."""

from __future__ import annotations

import numpy as np
import pandas as pd

from optiflow.config import BacktestParams, load_config
from optiflow.monitoring.backtest import run_backtest
from tests.conftest import REPO


def test_retraining_after_a_confirmed_concept_shift_learns_the_new_labels() -> None:
    settings = BacktestParams(
        batches=18, batch_rows=800, label_delay=0, shift_at=4, scenarios=("concept",), policies=("never", "oracle")
    )
    _, timeline = run_backtest(load_config(REPO / "params.yaml"), settings)
    oracle = timeline[timeline["policy"] == "oracle"].set_index("t")
    never = timeline[timeline["policy"] == "never"].set_index("t")
    retrains = oracle.index[oracle["retrained"]].tolist()
    reasons = oracle.loc[retrains, "decision_concept_shift"].fillna("").tolist()
    confirmed = [
        t for t, reason in zip(retrains, reasons, strict=True) if "concept shift since batch concept-004" in reason
    ]
    assert confirmed, oracle[["decision", "shift", "decision_concept_shift"]].to_string()
    after = range(confirmed[0] + 1, settings.batches)
    gain = oracle.loc[after, "realised_roc_auc"].to_numpy() - never.loc[after, "realised_roc_auc"].to_numpy()
    standard_error = gain.std(ddof=1) / np.sqrt(len(gain))
    assert gain.mean() > 0.02 and gain.mean() > 3 * standard_error, pd.Series(gain).describe()
