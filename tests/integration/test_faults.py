"""Fault injection on a trained project: a full disk, an unavailable tracking store, SIGKILL during training and
during registration, and two registrations at once. After each: every output is either the old one or complete,
the champion is unchanged (or moved by a serialised decision), and a re-run completes reusing finished stages."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from optiflow.config import load_config
from optiflow.errors import ServiceUnavailable
from optiflow.io import read_json, read_parquet
from optiflow.modeling.candidates import load_candidate
from optiflow.release.registry import LOCK_FILE
from tasks.ingest import ingest
from tasks.register import register
from tasks.split import split
from tests.conftest import output_digests, registry_state
from tests.integration.corpus.cases import params_with

REPO = Path(__file__).resolve().parents[2]


def _full_disk_after(written: int) -> Callable:
    """A writer that puts ``written`` bytes into its file, then fails as a full disk does."""

    def write(*args, **kwargs) -> None:
        target = next(a for a in args if isinstance(a, str | Path))
        Path(target).write_bytes(b"x" * written)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def _leftover_temporaries(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]


def test_full_disk_while_writing_parquet_leaves_the_old_files(trained_copy: Path, monkeypatch) -> None:
    root = trained_copy.parent
    before = output_digests(root)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda frame, path, **kw: _full_disk_after(100)(path))
    with pytest.raises(OSError, match="No space left"):
        split.fn(load_config(trained_copy.parent / "params.yaml"))
    assert output_digests(root) == before and _leftover_temporaries(root) == []


def test_full_disk_while_writing_a_report_folder_leaves_the_old_report(trained_copy: Path, monkeypatch) -> None:
    root = trained_copy.parent
    before = output_digests(root)
    monkeypatch.setattr("tasks.ingest.write_text", lambda path, text: _full_disk_after(10)(path))
    with pytest.raises(OSError, match="No space left"):
        ingest.fn(load_config(trained_copy))
    assert output_digests(root) == before and _leftover_temporaries(root) == []


def test_unavailable_tracking_store_is_a_clear_error_and_registers_nothing(
    trained_copy: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow retries opening the store with backoff (10 attempts, ~100 s) and the register task twice more
    (ServiceUnavailable is transient); two attempts here keep the test short."""
    monkeypatch.setattr("mlflow.store.db.utils.MAX_RETRY_COUNT", 2)
    root = trained_copy.parent
    (root / "store-is-a-folder.db").mkdir()
    before, registry = output_digests(root), registry_state(trained_copy)

    with monkeypatch.context() as broken:  # tracking is a runtime setting: from the environment, not params.yaml
        broken.setenv("OPTIFLOW_TRACKING__URI", "sqlite:///store-is-a-folder.db")
        with pytest.raises(ServiceUnavailable, match=r"store-is-a-folder\.db is unavailable"):
            register.fn(load_config(trained_copy))
        assert main(["stage", "register", "--params", str(trained_copy)]) == 2
    error = capsys.readouterr().err
    assert "MLflow tracking store" in error and "Traceback" not in error
    assert output_digests(root) == before and registry_state(trained_copy) == registry


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows", *args]


def _kill_when(process: subprocess.Popen, ready: Callable[[], bool], limit: float = 300) -> None:
    """SIGKILL the process as soon as ``ready()``; fail if it ends first (the fault would not be injected)."""
    deadline = time.monotonic() + limit
    while not ready():
        assert process.poll() is None, f"finished before the fault point:\n{process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "fault point not reached in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        _cli(*args), cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _run(*args: str) -> str:
    done = subprocess.run(_cli(*args), cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _runs(root: Path) -> int:
    with sqlite3.connect(root / "mlflow.db", timeout=30) as connection:
        return connection.execute("SELECT count(*) FROM runs").fetchone()[0]


def _database_intact(root: Path) -> bool:
    with sqlite3.connect(root / "mlflow.db", timeout=30) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _outputs_complete(params: Path) -> None:
    """Every output a reader would open is whole: tables read, JSON parses, models pass their sha256 check."""
    config = load_config(params)
    for key in ("dataset", "train", "valid", "test", "reference"):
        assert len(read_parquet(config.path(key))) > 0
    for path in config.root.glob("reports/**/*.json"):
        read_json(path)
    for path in config.root.glob("models/tuning/*.json"):
        read_json(path)
    for folder in config.path("candidates").iterdir():
        if not folder.name.startswith("."):
            load_candidate(folder)


@pytest.mark.slow
def test_sigkill_during_training_keeps_the_champion_and_a_rerun_reuses_finished_stages(trained_copy: Path) -> None:
    root = trained_copy.parent
    retuned = params_with(root, "retune", **{"tune.n_trials": 4})
    registry = registry_state(trained_copy)

    process = _spawn("train", "--params", str(retuned))
    _kill_when(process, lambda: any((root / "models").glob(".candidates.*.tmp")))  # train is writing its models

    assert registry_state(trained_copy)["aliases"] == registry["aliases"] and _database_intact(root)
    _outputs_complete(retuned)
    summary = _run("train", "--params", str(retuned))
    states = dict(re.findall(r"│ (\w+)\s+│ (ran|cached)\s+│", summary))
    assert states["ingest"] == states["split"] == states["tune"] == "cached", summary
    assert states["train"] == states["register"] == "ran", summary
    assert registry_state(trained_copy)["aliases"]["champion"] == registry["aliases"]["champion"]


@pytest.mark.slow
def test_sigkill_during_registration_keeps_the_champion_and_a_rerun_registers(trained_copy: Path) -> None:
    root = trained_copy.parent
    before, registry = output_digests(root, skip=("mlflow.db", "mlartifacts", "params")), registry_state(trained_copy)
    runs = _runs(root)

    process = _spawn("stage", "register", "--params", str(trained_copy))
    _kill_when(process, lambda: _runs(root) > runs)  # the MLflow run of this registration has started

    assert _database_intact(root)
    assert registry_state(trained_copy)["aliases"] == registry["aliases"]
    assert output_digests(root, skip=("mlflow.db", "mlartifacts", "params")) == before  # registration.json, report
    _run("stage", "register", "--params", str(trained_copy))
    after = registry_state(trained_copy)
    assert after["aliases"] == registry["aliases"]  # the same model ties with the champion: not promoted
    assert len(after["versions"]) > len(registry["versions"]) and read_json(root / "reports/registration.json")


def test_the_registry_lock_excludes_another_process(trained_copy: Path) -> None:
    root = trained_copy.parent
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from optiflow.release.registry import registry_lock\n"
         f"with registry_lock({str(root)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with open(root / LOCK_FILE, "a") as handle:
        with pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.communicate("", timeout=30)
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the holder is gone


@pytest.mark.slow
def test_two_registrations_at_once_are_both_recorded_and_promotion_is_serialised(trained_copy: Path) -> None:
    """With non-inferiority alone a tie promotes, so both runs promote. Serialised, the second compares with the
    first's version and makes it `previous`; compared on a stale read, both would see v1 and `previous` would stay
    v1."""
    root = trained_copy.parent
    tie = params_with(root, "tie", **{"gates.champion.superiority": False})
    registry, runs = registry_state(trained_copy), _runs(root)

    processes = [_spawn("stage", "register", "--params", str(tie)) for _ in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]

    after = registry_state(trained_copy)
    assert _database_intact(root) and _runs(root) == runs + 2
    assert after["versions"] == [*registry["versions"], 2, 3]
    assert {after["aliases"]["champion"], after["aliases"]["previous"]} == {"2", "3"}, after["aliases"]
