"""Quarantine: batches that must not become training data until a person has looked at them.

A batch goes here when it fails validation, or when it passes but looks broken upstream: a numeric column's typical
size jumps by an order of magnitude or more against the reference (units changed: months reported as years, euros
as cents), or a categorical column sends values the reference never held (a value renamed or added; values that
are merely absent, as in one segment's batch, are drift, not a break). A quarantined batch is kept with its reasons
in paths.quarantine and never enters a retraining window; `optiflow quarantine release` hands it to the windows (a
person vouched for it), `optiflow quarantine drop` deletes it.

Category changes are judged so that chance cannot raise them: a value counts as new (or gone) only when, had the
batch and the reference come from one distribution, the other side would have shown it at least
``EXPECTED_COUNT`` times on average (the chance of seeing it none of those times is below e^-20).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optiflow.config import Config, MonitorParams
from optiflow.data.schema import Schema
from optiflow.errors import OptiflowError
from optiflow.io import read_json, read_parquet, write_json, write_parquet
from optiflow.monitoring.retraining import DROPPED, RELEASED

EXPECTED_COUNT = 20.0


@dataclass(frozen=True)
class Quarantined:
    batch_id: str
    source: str
    reasons: tuple[str, ...]
    at: str
    rows: int
    labelled_rows: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "reasons": list(self.reasons)}


def upstream_breaks(reference: pd.DataFrame, batch: pd.DataFrame, schema: Schema, params: MonitorParams) -> list[str]:
    """Why ``batch`` looks broken upstream against ``reference`` (empty: it does not)."""
    reasons = []
    for column in schema.numeric:
        before = float(np.nanmean(np.abs(reference[column].to_numpy(dtype=float))))
        after = float(np.nanmean(np.abs(batch[column].to_numpy(dtype=float))))
        if before > 0 and after > 0 and max(after / before, before / after) >= params.max_scale_ratio:
            reasons.append(
                f"column {column!r}: mean size {after:.4g} against {before:.4g} in the reference "
                f"(x{after / before:.3g}); units changed upstream? (monitor.max_scale_ratio {params.max_scale_ratio:g})"
            )
    for column in schema.categorical:
        expected, observed = _shares(reference[column]), _shares(batch[column])
        new = sorted(value for value, share in observed.items() if value not in expected and share * len(reference)
                     >= EXPECTED_COUNT)  # fmt: skip
        gone = sorted(value for value, share in expected.items() if value not in observed and share * len(batch)
                      >= EXPECTED_COUNT)  # fmt: skip
        if new:  # values gone with none new is a segment of the population (one region's batch), not a break
            change = "; ".join(part for part in (f"new {new}" if new else "", f"gone {gone}" if gone else "") if part)
            reasons.append(f"column {column!r}: its set of values changed ({change})")
    return reasons


def _shares(series: pd.Series) -> dict[str, float]:
    return series.astype(object).where(series.notna(), "<missing>").astype(str).value_counts(normalize=True).to_dict()


def quarantine_batch(config: Config, identifier: str, source: str, frame: pd.DataFrame, reasons: list[str]) -> Path:
    """Keep the batch and its reasons in paths.quarantine; returns the batch's file."""
    folder = config.path("quarantine")
    labelled = config.params.data.target in frame.columns
    record = Quarantined(
        identifier,
        source,
        tuple(reasons),
        datetime.now(UTC).isoformat(timespec="seconds"),
        len(frame),
        len(frame) if labelled else 0,
    )
    write_parquet(folder / f"{identifier}.parquet", frame)
    write_json(folder / f"{identifier}.json", record.to_dict())
    return folder / f"{identifier}.parquet"


def quarantined(config: Config) -> list[Quarantined]:
    """Every batch now in quarantine, oldest first."""
    folder = config.path("quarantine")
    records = [read_json(path) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return sorted(
        (Quarantined(**{**record, "reasons": tuple(record["reasons"])}) for record in records), key=lambda q: q.at
    )


def release(config: Config, identifier: str, note: str) -> Quarantined:
    """A person vouches for the batch: a labelled one joins the retraining windows; its history row says who, when
    and why."""
    from optiflow.monitoring.batches import keep_batch, set_history_decision

    record = _record(config, identifier)
    frame = read_parquet(config.path("quarantine") / f"{identifier}.parquet")
    if record.labelled_rows:
        keep_batch(config, identifier, frame)
    set_history_decision(config, identifier, RELEASED, _signed("released", note), record.labelled_rows)
    _remove(config, identifier)
    return record


def drop(config: Config, identifier: str, note: str) -> Quarantined:
    """Delete the quarantined batch; its history row says who, when and why."""
    from optiflow.monitoring.batches import set_history_decision

    record = _record(config, identifier)
    set_history_decision(config, identifier, DROPPED, _signed("dropped", note), record.labelled_rows)
    _remove(config, identifier)
    return record


def _record(config: Config, identifier: str) -> Quarantined:
    found = {record.batch_id: record for record in quarantined(config)}
    if identifier not in found:
        raise OptiflowError(
            f"no batch {identifier!r} in quarantine ({config.path('quarantine')}); quarantined: {sorted(found)}"
        )
    return found[identifier]


def _remove(config: Config, identifier: str) -> None:
    for suffix in (".parquet", ".json"):
        (config.path("quarantine") / f"{identifier}{suffix}").unlink(missing_ok=True)


def _signed(action: str, note: str) -> str:
    at = datetime.now(UTC).isoformat(timespec="seconds")
    return f"{action} from quarantine by {getpass.getuser()} at {at}: {note}"
