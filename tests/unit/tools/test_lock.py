"""tools/lock.py: hashed lock files keep their pins, list every reported hash and refuse a pin with none."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import lock


def test_pins_read_through_hash_lines_and_hashes_follow_each_pin(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "requirements.lock"
    path.write_text("boolean.py==5.0 \\\n    --hash=sha256:old\ntorch==2.13.0\n")
    assert lock.pins(path) == ["boolean.py==5.0", "torch==2.13.0"]
    reported = {"boolean-py": {"b" * 64}, "torch": {"c" * 64, "a" * 64}}
    monkeypatch.setattr(lock, "reported_hashes", lambda requirements: reported)
    assert lock.hashed_lock(path) == (
        f"boolean.py==5.0 \\\n    --hash=sha256:{'b' * 64}\n"
        f"torch==2.13.0 \\\n    --hash=sha256:{'a' * 64} \\\n    --hash=sha256:{'c' * 64}\n"
    )


def test_a_pin_pip_reports_no_hash_for_is_an_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "requirements.lock"
    path.write_text("torch==2.13.0\n")
    monkeypatch.setattr(lock, "reported_hashes", lambda requirements: {})
    with pytest.raises(SystemExit, match=r"no sha256 for torch==2\.13\.0"):
        lock.hashed_lock(path)


def test_the_shipped_locks_hash_every_pin() -> None:
    root = Path(__file__).resolve().parents[3]
    for name in lock.LOCKS:
        text = (root / name).read_text()
        assert text.count("==") == len(lock.pins(root / name)) and len(lock.pins(root / name)) > 5
        blocks = text.split("\n")
        pinned = [i for i, line in enumerate(blocks) if "==" in line]
        assert all(blocks[i + 1].strip().startswith("--hash=sha256:") for i in pinned), name
