"""Timing measured one way everywhere: warm-up calls first, then repeated timed calls, on a fixed number of threads.

The latency gate, the compression variants and the tuning trials all time predictions through here, so their
figures are comparable. One thread by default: OpenMP threads on a busy machine stall (HistGradientBoosting took
100x longer with two threads on a shared 2-core host), which would make a budget gate flip with the neighbours' load.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
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
    return rotated_seconds({"call": call}, repeats=repeats, warmup=warmup, threads=threads)["call"]


def rotated_seconds(
    calls: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 1, threads: int | None = 1
) -> dict[str, np.ndarray]:
    """Seconds of each call in each of ``repeats`` rounds, the calls taken in turn (the order rotating every round)
    after ``warmup`` untimed rounds, threads capped as in call_seconds. A slow spell of the machine then falls on
    every call alike, and round i of one call pairs with round i of another (speedup); timed in blocks, one spell
    once made the same int8 network 1.5x slower in one block than in the next."""
    from threadpoolctl import threadpool_limits

    names = list(calls)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    # torch's setting is restored last: restored before threadpoolctl resets OpenMP, torch would go on computing as
    # with one thread (other float32 sums) while reporting its old count, changing every later stage's numbers.
    with _torch_threads(threads), threadpool_limits(limits=threads) if threads else contextlib.nullcontext():
        for _ in range(warmup):
            for name in names:
                calls[name]()
        for round_ in range(repeats):
            turn = round_ % len(names)
            for name in names[turn:] + names[:turn]:
                seconds[name].append(timed(calls[name])[1])
    return {name: np.array(values) for name, values in seconds.items()}


@dataclass(frozen=True)
class Speedup:
    """How many times faster one call ran than another over paired rounds: the median per-round ratio and its
    distribution-free interval. `shown` is +1 (faster), -1 (slower) or 0 (the interval holds 1: not told apart)."""

    ratio: float
    low: float
    high: float
    confidence: float
    rounds: int

    @property
    def shown(self) -> int:
        return 1 if self.low > 1.0 else -1 if self.high < 1.0 else 0

    def inverse(self) -> Speedup:
        return Speedup(1.0 / self.ratio, 1.0 / self.high, 1.0 / self.low, self.confidence, self.rounds)

    def __str__(self) -> str:
        return (
            f"{self.ratio:.3g}x as fast, {self.confidence:.0%} interval {self.low:.3g}-{self.high:.3g}x, "
            f"over {self.rounds} paired rounds"
        )


def speedup(seconds: np.ndarray, baseline: np.ndarray, confidence: float = 0.95) -> Speedup:
    """`seconds` against `baseline`, timed in the same rounds (rotated_seconds): median of baseline / seconds per
    round, with the binomial order-statistic interval of a median, which a few stalled rounds cannot move."""
    from scipy.stats import binom

    logs = np.sort(np.log(np.asarray(baseline, float)) - np.log(np.asarray(seconds, float)))
    rounds = len(logs)
    k = int(binom.ppf((1.0 - confidence) / 2.0, rounds, 0.5))  # the interval is the k-th smallest to k-th largest
    low, high = (logs[k - 1], logs[rounds - k]) if k >= 1 else (-np.inf, np.inf)
    return Speedup(float(np.exp(np.median(logs))), float(np.exp(low)), float(np.exp(high)), confidence, rounds)


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
