"""Which model answers a row during a release: a stable hash of the entity's key against the canary share, so one
customer always sees one model for the whole release, and the split holds for any traffic order."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from optiflow.config import Config

_SCALE = float(1 << 64)


def key_column(config: Config) -> str | None:
    """The column naming the entity (in requests and label files): release.key_column, else the first of
    data.id_columns; None: requests are keyed by a hash of their row."""
    ids = config.params.data.id_columns
    return config.params.release.key_column or (ids[0] if ids else None)


def entity_key(row: Mapping[str, Any], key_column: str | None, features: Sequence[str]) -> str:
    """The row's entity: its ``key_column`` value when it has one, else a hash of its feature values (the same input
    is the same entity)."""
    if key_column is not None and row.get(key_column) not in (None, ""):
        return str(row[key_column])[:128]
    values = json.dumps([row.get(column) for column in features], default=str, separators=(",", ":"))
    return "row:" + hashlib.sha256(values.encode()).hexdigest()[:32]


def bucket(key: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by the key and the release (``salt``): a new release reshuffles entities."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def to_challenger(key: str, share: float, salt: str) -> bool:
    """Whether the canary answers this entity."""
    return bucket(key, salt) < share
