"""Latency measured one way everywhere: warm up, time repeated calls on one thread, report the median."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd


def latency_ms_per_1k_rows(model: Any, rows: pd.DataFrame, repeats: int = 7) -> float:
    """Median predict_proba time per 1,000 rows after one warm-up call (first calls pay for caches and imports).

    Measured on one thread: OpenMP threads on a busy machine stall (HistGradientBoosting took 100x longer with
    two threads on a shared 2-core host), which would make the budget gate flip with the neighbours' load.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        model.predict_proba(rows)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.predict_proba(rows)
            timings.append(time.perf_counter() - started)
    return float(np.median(timings)) * 1000.0 * 1000.0 / len(rows)
