"""What a table holds, and the settings that follow from it: what `optiflow init DATA --target COLUMN` writes.

Like TFX's SchemaGen, the profile proposes and a person reviews: each column's type (numeric, categorical, an
id, a time, free text, empty), its missing values, number of values and range; the target's two labels; the
validation rules, slices, robustness bounds and drift scenarios that fit those columns. It never guesses sensitive
features: it lists the columns whose names suggest one, for the user to declare.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from optiflow.config import DataParams, FeatureTypes, Label, MonitorParams, SplitParams, ValidateParams
from optiflow.data.drift_tests import choose_tests
from optiflow.data.ingest import coerce, parse_numeric
from optiflow.data.sampling import sample_rows
from optiflow.data.schema import Schema
from optiflow.data.simulate import derive_scenarios
from optiflow.data.validation import leakage_checks
from optiflow.errors import ConfigError, closest

Kind = Literal["numeric", "categorical", "id", "time", "text", "empty"]
IGNORED_KINDS = ("time", "text", "empty")  # written to data.ignore_columns, never features

MAX_DOMAIN = 20  # a categorical column with at most this many values gets a validation domain
MAX_SLICE_LEVELS = 10  # evaluation slices: categorical columns with 2 to this many values ...
MAX_SLICES = 3  # ... at most this many
MAX_BOUNDS = 4  # robustness bounds on at most this many numeric columns (the search tries 3^n corners per row)
UNIQUE_SHARE = 0.5  # a text column with more distinct values than this share of rows is an id or free text
_POSITIVE_WORDS = ("yes", "y", "true", "1", "positive", "pos", "bad", "default", "churn", "fraud", "fail", "failed")
_ID_WORDS = ("id", "key", "uuid", "guid", "number", "no", "nr", "code", "ref")
_TIME_WORDS = ("date", "time", "timestamp", "datetime", "at", "on", "day", "month", "year", "created", "updated")
_SENSITIVE_WORDS = (
    "age", "sex", "gender", "female", "male", "race", "ethnic", "ethnicity", "religion", "nationality", "national",
    "citizen", "citizenship", "marital", "married", "disability", "disabled", "pregnant", "pregnancy", "orientation",
    "senior", "birth", "dob", "foreign", "origin", "veteran", "language",
)  # fmt: skip


@dataclass(frozen=True)
class ColumnProfile:
    """One column as Optiflow would treat it."""

    name: str
    kind: Kind
    missing: int
    distinct: int
    low: float | None = None  # numeric: the observed range
    high: float | None = None
    integer: bool = False  # numeric: every value a whole number
    values: tuple[Label, ...] = ()  # categorical with at most MAX_DOMAIN values: every value, most frequent first
    note: str = ""


@dataclass(frozen=True)
class TableProfile:
    source: Path
    rows: int
    target: str
    negative_label: Label
    positive_label: Label
    positive_share: float
    label_note: str  # how the positive label was chosen
    columns: tuple[ColumnProfile, ...]  # every column but the target

    def of_kind(self, *kinds: Kind) -> list[ColumnProfile]:
        return [column for column in self.columns if column.kind in kinds]

    def sensitive_candidates(self) -> list[str]:
        """Columns whose names suggest a sensitive attribute (never declared for the user)."""
        return [c.name for c in self.columns if c.kind not in IGNORED_KINDS and _has_word(c.name, _SENSITIVE_WORDS)]


def profile_table(frame: pd.DataFrame, source: Path, target: str, positive: str | None = None) -> TableProfile:
    """Profile every column of ``frame``; a missing target, or one without exactly two labels, is a ConfigError."""
    if target not in frame.columns:
        match = closest(target, frame.columns)
        raise ConfigError(
            f"{source}: no column {target!r} to predict" + (f"; did you mean {match!r}?" if match else "")
        )
    labels = frame[target].dropna().unique().tolist()
    if len(labels) != 2:
        shown = labels[:10]
        raise ConfigError(
            f"{source}: target {target!r} must hold exactly two labels, found {len(labels)}: {shown}"
            + (" ..." if len(labels) > 10 else "")
        )
    negative, chosen, note = _labels([_plain(label) for label in labels], frame[target], positive, source, target)
    columns = tuple(_profile_column(frame[name], name, len(frame)) for name in frame.columns if name != target)
    ids = [column for column in columns if column.kind == "id"]
    demoted = {column.name for column in ids[1:]}  # one id column; other unique ones are left out as text
    columns = tuple(
        ColumnProfile(**{**column.__dict__, "kind": "text", "note": "unique per row"})
        if column.name in demoted
        else column
        for column in columns
    )
    share = float((frame[target] == chosen).mean())
    return TableProfile(source, len(frame), target, negative, chosen, share, note, columns)


def data_settings(profile: TableProfile, source: str) -> DataParams:
    """The `data:` group the profile implies (``source`` as params.yaml will hold it)."""
    return DataParams(
        source=source,
        target=profile.target,
        positive_label=profile.positive_label,
        negative_label=profile.negative_label,
        id_columns=tuple(c.name for c in profile.of_kind("id")),
        feature_types=FeatureTypes(
            numeric=tuple(c.name for c in profile.of_kind("numeric")),
            categorical=tuple(c.name for c in profile.of_kind("categorical")),
        ),
        ignore_columns=tuple(c.name for c in profile.of_kind(*IGNORED_KINDS)),
    )


@dataclass(frozen=True)
class Proposal:
    """What `optiflow init` proposes for a table: the profile, the settings group by group, the comments that go
    above some of them, and the columns that alone give the label away (ingest will stop on them)."""

    profile: TableProfile
    data: DataParams
    settings: dict[str, dict[str, Any]]
    comments: dict[tuple[str, str], str]
    leaks: list[str]


def propose(
    frame: pd.DataFrame,
    source: Path,
    source_setting: str,
    target: str,
    positive: str | None = None,
    sensitive: tuple[str, ...] = (),
    batch_rows: int = 1000,
    seed: int = 42,
) -> Proposal:
    """Profile ``frame`` (read from ``source``; params.yaml will name it ``source_setting``) and derive its settings;
    ``sensitive`` are the columns the user declares (never guessed), drift tests are chosen for ``batch_rows``."""
    profile = profile_table(frame, source, target, positive)
    unknown = [column for column in sensitive if column not in frame.columns]
    if unknown:
        hints = [f"{c!r}" + (f" (did you mean {m!r}?)" if (m := closest(c, frame.columns)) else "") for c in unknown]
        raise ConfigError(f"--sensitive names no column of {source.name}: {', '.join(hints)}")
    data = data_settings(profile, source_setting).model_copy(update={"sensitive_features": tuple(sensitive)})
    settings = derived_settings(profile, frame, data, batch_rows, seed)
    candidates = [c for c in profile.sensitive_candidates() if c not in sensitive]
    comments = {
        ("data", "ignore_columns"): "types, ids and columns left out: proposed from the data, review them",
        ("validate", "min_rows"): "rules proposed from the data: review them",
        ("monitor", "drift_tests"): f"chosen for batches of about {batch_rows} rows",
    }
    declared = "declared with --sensitive" if sensitive else "none declared: fairness is not evaluated and blocks"
    comments[("data", "sensitive_features")] = (
        f"{declared}"
        + ("" if sensitive else " a release until you declare some (or allow it in gates.allow_not_evaluated)")
        + (f"; columns whose names suggest one: {', '.join(candidates)}" if candidates else "")
    )
    leaks = leakage_suspects(profile, frame, data, ValidateParams().max_feature_auc or 1.0)
    return Proposal(profile, data, settings, comments, leaks)


def derived_settings(
    profile: TableProfile, frame: pd.DataFrame, data: DataParams, batch_rows: int = 1000, seed: int = 42
) -> dict[str, dict[str, Any]]:
    """The data-specific part of params.yaml, group by group: what `optiflow init` writes (a person reviews it)."""
    numeric, categorical = profile.of_kind("numeric"), profile.of_kind("categorical")
    typed = coerce(frame, data, profile.source, undeclared="drop")
    reference = sample_rows(typed, SplitParams().reference_rows, seed)
    drift = choose_tests(
        reference, [c.name for c in numeric], [c.name for c in categorical], batch_rows, MonitorParams()
    )
    slices = [c.name for c in categorical if 2 <= c.distinct <= MAX_SLICE_LEVELS][:MAX_SLICES]
    busiest = sorted(numeric, key=lambda c: -c.distinct)[:MAX_BOUNDS]
    random_lift = profile.positive_share + (1.0 - profile.positive_share) * 0.2
    return {
        "data": _data_group(data),
        "validate": {
            "min_rows": max(1, profile.rows // 2),
            "null_fraction": {
                c.name: min(1.0, math.ceil(200 * c.missing / profile.rows) / 100)
                for c in (*numeric, *categorical)
                if c.missing
            },
            "ranges": {c.name: [0, None] for c in numeric if c.low is not None and c.low >= 0},
            "domains": {c.name: sorted(c.values, key=str) for c in categorical if c.values},
        },
        "evaluate": {"slices": slices},
        "robustness": {"bounds": {c.name: _bound(c) for c in busiest}},
        "gates": {"min_quality": {"roc_auc": 0.7, "pr_auc": round(random_lift, 2)}},
        "register": {"model_name": "optiflow-" + _slug(profile.source.name.split(".")[0])},
        "monitor": {"drift_tests": {column: test.model_dump() for column, test in drift.items()}},
        "simulate": {
            "scenarios": [
                scenario.model_dump(mode="json", exclude_defaults=True) for scenario in derive_scenarios(typed, data)
            ]
        },
    }


UNIT_STEP_RANGE = 50  # a whole-number column spanning at least this many units (months, years) moves by one unit


def _bound(column: ColumnProfile) -> dict[str, Any]:
    """A plausible move of a numeric column: one unit for a whole-number column with a wide range (a tenure in
    months, an age), else 5% of the value; a column with negative values is not clipped at 0."""
    wide = column.low is not None and column.high is not None and column.high - column.low >= UNIT_STEP_RANGE
    bound: dict[str, Any] = {"absolute": 1} if column.integer and wide else {"relative": 0.05}
    if column.low is not None and column.low < 0:
        bound["non_negative"] = False
    return bound


def leakage_suspects(profile: TableProfile, frame: pd.DataFrame, data: DataParams, max_auc: float) -> list[str]:
    """``column: observed`` for each feature that alone gives the label away (ingest will stop on it)."""
    typed = coerce(frame, data, profile.source, undeclared="drop")
    schema = Schema(
        tuple(c.name for c in profile.of_kind("numeric")), tuple(c.name for c in profile.of_kind("categorical"))
    )
    return [
        f"{check.column}: {check.observed}"
        for check in leakage_checks(typed, schema, data, max_auc)
        if not check.success
    ]


def _data_group(data: DataParams) -> dict[str, Any]:
    dumped = data.model_dump(mode="json", exclude_defaults=True)
    dumped.setdefault("id_columns", [])
    dumped.setdefault("sensitive_features", [])
    dumped.setdefault("ignore_columns", [])
    return dumped


def _labels(
    labels: list[Label], target: pd.Series, positive: str | None, source: Path, name: str
) -> tuple[Label, Label, str]:
    """(negative, positive, how the positive was chosen)."""
    if positive is not None:
        matching = [label for label in labels if str(label).lower() == positive.lower()]
        if not matching:
            raise ConfigError(f"{source}: --positive {positive!r} is not a value of {name!r}; its values: {labels}")
        chosen, note = matching[0], "given with --positive"
    elif set(labels) == {0, 1} or set(labels) == {True, False}:
        chosen, note = (True if True in labels and isinstance(labels[0], bool) else 1), "the usual positive class"
    elif named := [label for label in labels if str(label).strip().lower() in _POSITIVE_WORDS]:
        chosen, note = named[0], "its name reads as the event; pass --positive to choose the other"
    else:
        counts = target.value_counts()
        chosen, note = _plain(counts.index[-1]), "the rarer label; pass --positive to choose the other"
    negative = next(label for label in labels if label != chosen)
    return negative, chosen, note


def _profile_column(series: pd.Series, name: str, rows: int) -> ColumnProfile:
    missing = int(series.isna().sum())
    present = series.dropna()
    distinct = int(present.nunique())
    if present.empty:
        return ColumnProfile(name, "empty", missing, 0, note="no value at all")
    if pd.api.types.is_bool_dtype(series):
        return _categorical(series, name, missing, distinct)
    numbers = series if pd.api.types.is_numeric_dtype(series) else None
    if numbers is None:
        parsed, bad = parse_numeric(series)
        numbers = parsed if not bad.any() else None
    if numbers is not None:
        values = numbers.dropna().astype(float)
        integer = bool(np.all(np.mod(values, 1) == 0))
        unique = distinct == len(values) == rows
        if integer and unique and (_has_word(name, _ID_WORDS) or values.max() - values.min() == rows - 1):
            return ColumnProfile(name, "id", missing, distinct, note="unique whole numbers: an id")
        if distinct <= 2:
            return _categorical(series, name, missing, distinct, note="two values: a flag")
        return ColumnProfile(name, "numeric", missing, distinct, float(values.min()), float(values.max()), integer)
    if _looks_like_time(present, name):
        return ColumnProfile(name, "time", missing, distinct, note="dates or times: not a feature")
    if distinct > UNIQUE_SHARE * rows:
        if distinct == rows and _has_word(name, _ID_WORDS):
            return ColumnProfile(name, "id", missing, distinct, note="unique per row: an id")
        return ColumnProfile(name, "text", missing, distinct, note=f"{distinct} values in {rows} rows: free text")
    return _categorical(series, name, missing, distinct)


def _categorical(series: pd.Series, name: str, missing: int, distinct: int, note: str = "") -> ColumnProfile:
    values = tuple(_plain(value) for value in series.value_counts().index) if distinct <= MAX_DOMAIN else ()
    if not note and distinct > MAX_DOMAIN:
        note = f"{distinct} values: no domain (unseen values are scored, not rejected)"
    return ColumnProfile(name, "categorical", missing, distinct, values=values, note=note)


def _looks_like_time(present: pd.Series, name: str) -> bool:
    sample = present.astype(str).head(200)
    if not sample.str.contains(r"\d[-/:.]\d", regex=True).mean() > 0.9:
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() > 0.9) or _has_word(name, _TIME_WORDS)


def _has_word(name: str, words: tuple[str, ...]) -> bool:
    """Whether a word of ``name`` (split at case changes, digits and punctuation) is one of ``words``."""
    parts = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)
    return any(part.lower() in words for part in parts) or name.lower() in words


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (YAML and pydantic want plain types)."""
    return value.item() if hasattr(value, "item") else value


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


def describe(profile: TableProfile, extra: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """The profile as rows for a table: column, kind, missing, values, range, note."""
    rows = []
    for column in profile.columns:
        span = "" if column.low is None else f"{column.low:g} .. {column.high:g}"
        rows.append(
            {
                "column": column.name,
                "kind": column.kind,
                "missing": f"{column.missing / profile.rows:.1%}" if column.missing else "-",
                "values": str(column.distinct),
                "range": span,
                "note": "; ".join(part for part in (column.note, (extra or {}).get(column.name, "")) if part),
            }
        )
    return rows
