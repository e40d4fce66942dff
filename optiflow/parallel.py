"""How a core function runs independent pieces without knowing where: the FanOut callable and its serial default.

The task layer hands the core a FanOut built on Prefect's task runners (threads or Dask); the core only calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

FanOut = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]
"""Runs fn(item) for each item, possibly in parallel (threads, Dask workers), and returns the results in order."""


def run_serially(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """The default fan-out: one item after another, in this thread."""
    return [fn(item) for item in items]
