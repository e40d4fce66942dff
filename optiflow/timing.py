"""Timing measured one way everywhere: warm-up calls first, then repeated timed calls, on a fixed number of threads.

The latency gate, the compression variants and the tuning trials all time predictions through here, so their
figures are comparable. One thread by default: OpenMP threads on a busy machine stall (HistGradientBoosting took
100x longer with two threads on a shared 2-core host), which would make a budget gate flip with the neighbours' load.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import pandas as pd

T = TypeVar("T")


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """The call's result and its wall-clock seconds."""
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def call_seconds(call: Callable[[], Any], *, repeats: int, warmup: int = 1, threads: int | None = 1) -> np.ndarray:
    """Seconds of each of ``repeats`` calls after ``warmup`` untimed ones, with native thread pools (OpenMP, BLAS and
    torch) capped at ``threads`` (None leaves them as they are)."""
    from threadpoolctl import threadpool_limits

    # torch's setting is restored last: restored before threadpoolctl resets OpenMP, torch would go on computing as
    # with one thread (other float32 sums) while reporting its old count, changing every later stage's numbers.
    with _torch_threads(threads), threadpool_limits(limits=threads) if threads else contextlib.nullcontext():
        for _ in range(warmup):
            call()
        return np.array([timed(call)[1] for _ in range(repeats)])


def latency_ms_per_1k_rows(model: Any, rows: pd.DataFrame, repeats: int = 7) -> float:
    """Median predict_proba time per 1,000 rows after one warm-up call (first calls pay for caches and imports)."""
    seconds = call_seconds(lambda: model.predict_proba(rows), repeats=repeats, warmup=1, threads=1)
    return float(np.median(seconds)) * 1000.0 * 1000.0 / len(rows)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch keeps its own intra-op pool: cap it for the block when torch is in use (never imported just for this)."""
    torch = sys.modules.get("torch")
    if not threads or torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
