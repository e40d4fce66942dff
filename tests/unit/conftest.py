"""Unit level: the core and the shells on tiny inline data; builders of that data shared by several subpackages."""

from __future__ import annotations

import numpy as np
import pandas as pd


def churn_like(n: int, seed: int, *, group_effect: float = 2.0, x2_effect: float = 0.5) -> pd.DataFrame:
    """Churn-like rows: numeric x1, x2, a categorical ``plan``, 0/1 columns ``group`` (the sensitive one) and
    ``other``, and a 0/1 label ``y`` that depends on x1, x2 and ``group``."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "plan": rng.choice(["basic", "plus", "pro"], size=n),
            "group": rng.integers(0, 2, size=n),
            "other": rng.integers(0, 2, size=n),
        }
    )
    logit = 1.2 * frame["x1"] + x2_effect * frame["x2"] + group_effect * frame["group"] - 1.0
    frame["y"] = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    return frame
