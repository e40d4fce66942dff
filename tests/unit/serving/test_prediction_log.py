"""Canary routing by entity key and the prediction log's writes, drops and label joins, on tiny inline data."""

from __future__ import annotations

import time

import numpy as np
import pytest

from optiflow.serving.prediction_log import CHAMPION, PredictionLog, Record
from optiflow.serving.routing import bucket, entity_key, to_challenger


def _record(key: str, request: str = "r1", row: int = 0) -> Record:
    return Record(request, row, 1.0, "1", CHAMPION, True, key, 0.25, 0, 2.0)


def test_buckets_are_uniform_stable_and_reshuffled_by_a_new_release() -> None:
    keys = [f"customer-{i}" for i in range(20_000)]
    values = np.array([bucket(key, "model:v2") for key in keys])
    counts = np.histogram(values, bins=10, range=(0, 1))[0]
    assert ((values >= 0) & (values < 1)).all()
    assert np.abs(counts - 2000).max() < 4 * np.sqrt(2000 * 0.9)  # within 4 binomial standard deviations per decile
    assert [bucket(key, "model:v2") for key in keys[:100]] == values[:100].tolist()
    other = np.array([bucket(key, "model:v3") for key in keys])
    assert np.corrcoef(values, other)[0, 1] < 0.05  # another release draws another split
    share = np.mean([to_challenger(key, 0.2, "model:v2") for key in keys])
    assert abs(share - 0.2) < 0.01


def test_an_entity_is_its_key_or_else_its_features() -> None:
    features = ["tenure", "contract"]
    assert entity_key({"id": 42, "tenure": 3, "contract": "x"}, "id", features) == "42"
    unkeyed = entity_key({"id": None, "tenure": 3, "contract": "x"}, "id", features)
    assert unkeyed == entity_key({"tenure": 3, "contract": "x", "other": 1}, None, features)
    assert unkeyed.startswith("row:") and unkeyed != entity_key({"tenure": 4, "contract": "x"}, None, features)


def test_the_writer_flushes_in_batches_and_a_full_queue_drops_and_counts(tmp_path) -> None:
    full = PredictionLog(f"sqlite:///{tmp_path / 'full.sqlite'}", max_queued=3)
    full.record(_record(f"k{i}", row=i) for i in range(5))
    assert (full.dropped, full.written) == (2, 0)
    full.close()
    assert full.written == 3 and len(PredictionLog(f"sqlite:///{tmp_path / 'full.sqlite'}").read()) == 3

    batched = PredictionLog(f"sqlite:///{tmp_path / 'batched.sqlite'}", flush_rows=4, flush_seconds=600).start()
    batched.record(_record(f"k{i}", row=i) for i in range(3))
    time.sleep(0.2)  # three rows stay queued: below flush_rows and long before flush_seconds
    assert batched.written == 0
    batched.record([_record("k3", row=3)])
    deadline = time.monotonic() + 30
    while batched.written < 4:
        assert time.monotonic() < deadline, "the writer did not flush a full batch"
        time.sleep(0.02)
    batched.record([_record("k4", row=4)])
    batched.close()  # the last record is written at close
    assert batched.written == 5 and batched.dropped == 0


def test_labels_join_by_key_and_the_newest_label_wins(tmp_path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    log.record([_record("a", row=0), _record("b", row=1), _record("a", request="r2")])
    log.flush()
    assert log.add_labels([("a", 0), ("b", 1)]) == 2
    assert log.add_labels([("a", 1), ("a", 0), ("a", 1)]) == 1  # the last of a request, then the newest request
    frame = log.read()
    assert frame.set_index(["request_id", "entity_key"])["outcome"].to_dict() == {
        ("r1", "a"): 1,
        ("r1", "b"): 1,
        ("r2", "a"): 1,
    }
    log.close()


@pytest.mark.parametrize("share", [0.05, 0.5])
def test_the_same_key_always_gets_the_same_model(share: float) -> None:
    keys = [str(i) for i in range(500)]
    first = [to_challenger(key, share, "s") for key in keys]
    assert first == [to_challenger(key, share, "s") for key in reversed(keys)][::-1]
