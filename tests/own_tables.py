"""Public-table-like tables unlike the shipped churn data, generated deterministically (a seed gives the same rows):
what a new user brings in the first hour. Each generator draws fresh rows from one fixed distribution, so
``credit(500, seed=1001)`` is a batch from the same distribution ``credit(4000, seed=1)`` was.

- credit: a numeric sensitive attribute (age, with missing values), a sex column, missing incomes, an id, an
  application date, and a label spelt "good" / "bad" (the positive class, about 22%, is "bad").
- retail: a city column with dozens of values, missing values in numeric features, a text id, a signup date, and a
  0/1 label.
- leaky: the credit table plus a column written after the outcome (the target in disguise).
- duplicate headers: the retail table with one column name given twice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CITIES = 60
PURPOSES = ("car", "furniture", "education", "business", "repairs", "holiday")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def credit(rows: int, seed: int) -> pd.DataFrame:
    """Loan applications: risk "bad" (about 22%) follows the loan-to-income ratio, duration, age and purpose."""
    rng = np.random.default_rng(seed)
    age = rng.integers(19, 76, rows).astype(float)
    income = np.round(rng.lognormal(10.3, 0.45, rows), 2)
    loan = np.round(income * rng.uniform(0.05, 1.2, rows), 2)
    duration = rng.choice([6, 12, 18, 24, 36, 48, 60], rows)
    purpose = rng.choice(PURPOSES, rows, p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.1])
    housing = rng.choice(["own", "rent", "free"], rows, p=[0.6, 0.3, 0.1])
    logit = (
        1.5 * (loan / income)
        + 0.05 * duration
        - 0.01 * (age - 45)
        + np.where(np.isin(purpose, ["business", "holiday"]), 1.6, 0.0)
        + np.where(housing == "rent", 1.2, 0.0)
        - 4.2
    )
    bad = rng.uniform(size=rows) < _sigmoid(2.0 * logit)
    frame = pd.DataFrame(
        {
            "applicant_id": np.arange(seed * 100_000, seed * 100_000 + rows),
            "age": age,
            "sex": rng.choice(["female", "male"], rows),
            "income": income,
            "loan_amount": loan,
            "duration_months": duration,
            "purpose": purpose,
            "housing": housing,
            "application_date": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, rows), unit="D"),
            "risk": np.where(bad, "bad", "good"),
        }
    )
    frame["application_date"] = frame["application_date"].dt.strftime("%Y-%m-%d")
    frame.loc[rng.uniform(size=rows) < 0.06, "age"] = np.nan
    frame.loc[rng.uniform(size=rows) < 0.05, "income"] = np.nan
    return frame


def retail(rows: int, seed: int) -> pd.DataFrame:
    """Shop customers: churned 0/1 (about 27%) depends on recency, visits, spend, channel and a few cities."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, CITIES + 1) ** 0.8
    city = rng.choice([f"city_{i:02d}" for i in range(CITIES)], rows, p=weights / weights.sum())
    visits = rng.poisson(6, rows)
    spend = np.round(rng.gamma(2.0, 40.0, rows) * (1 + visits / 10), 2)
    recency = np.round(rng.exponential(30, rows), 1)
    channel = rng.choice(["web", "store", "app"], rows, p=[0.5, 0.3, 0.2])
    discount = np.round(rng.uniform(0, 0.4, rows), 3)
    logit = (
        0.05 * recency
        - 0.25 * visits
        - 0.004 * spend
        + np.where(channel == "store", -0.8, 0.0)
        + np.where(np.isin(city, ["city_03", "city_07", "city_11"]), 1.5, 0.0)
        - 0.3
    )
    churned = (rng.uniform(size=rows) < _sigmoid(3.0 * logit)).astype(int)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{seed:03d}{i:06d}" for i in range(rows)],
            "signup": (pd.Timestamp("2022-06-01") + pd.to_timedelta(rng.integers(0, 900, rows), unit="D")).strftime(
                "%Y-%m-%d"
            ),
            "city": city,
            "region": np.array(["north", "south", "east", "west"])[np.arange(rows) % 4],
            "visits": visits,
            "spend": spend,
            "days_since_last": recency,
            "discount_rate": discount,
            "channel": channel,
            "churned": churned,
        }
    )
    frame.loc[rng.uniform(size=rows) < 0.10, "spend"] = np.nan
    frame.loc[rng.uniform(size=rows) < 0.05, "days_since_last"] = np.nan
    return frame


def leaky(rows: int, seed: int) -> pd.DataFrame:
    """The credit table plus `collections_status`, set after a loan went bad: the target in disguise."""
    frame = credit(rows, seed)
    frame.insert(len(frame.columns) - 1, "collections_status", np.where(frame["risk"] == "bad", "sent", "none"))
    return frame


def write_duplicate_headers(frame: pd.DataFrame, path: Path, column: str) -> Path:
    """``frame`` as CSV with ``column``'s name given to a second column too (pandas would rename it silently)."""
    header = [column if name == frame.columns[-2] else name for name in frame.columns]
    text = frame.to_csv(index=False, header=False)
    path.write_text(",".join(header) + "\n" + text)
    return path
