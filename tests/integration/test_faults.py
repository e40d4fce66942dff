"""Fault injection on a trained project: a full disk, an unavailable tracking store, SIGKILL during training and
during registration, and two registrations at once. After each: every output is either the old one or complete,
the champion is unchanged (or moved by a serialised decision), and a re-run completes reusing finished stages."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import select
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
@pytest.mark.usefixtures("flows_in_processes_reuse_the_session_api")
def test_sigkill_during_training_keeps_the_champion_and_a_rerun_reuses_finished_stages(trained_copy: Path) -> None:
    root = trained_copy.parent
    retuned = params_with(root, "retune", **{"tune.n_trials": 4})
    registry = registry_state(trained_copy)

    process = _spawn("train", "--params", str(retuned))
    _kill_when(process, lambda: any((root / "models").glob(".candidates.*.tmp")))  # train is writing its models

    assert registry_state(trained_copy)["aliases"] == registry["aliases"] and _database_intact(root)
    _outputs_complete(retuned)
    summary = _run("train", "--params", str(retuned))
    ran, cached = re.search(r"Training run: \d+ stage\(s\) ran \(([^)]*)\), \d+ cached \(([^)]*)\)", summary).groups()
    assert ran.split(", ")[0] == "train" and cached.startswith("ingest, split, tune"), summary  # the killed stage on
    assert registry_state(trained_copy)["aliases"]["champion"] == registry["aliases"]["champion"]


@pytest.mark.slow
def test_sigkill_during_registration_keeps_the_champion_and_a_rerun_registers(trained_copy: Path) -> None:
    root = trained_copy.parent
    kept = ("mlflow.db", "mlartifacts", "params", ".optiflow-training.lock")  # what a registration may touch
    before, registry = output_digests(root, skip=kept), registry_state(trained_copy)
    runs = _runs(root)
    # another gate margin: a run identical to a registered version would register nothing, by design
    regated = params_with(root, "regate", **{"gates.champion.margin": 0.02})

    process = _spawn("stage", "register", "--params", str(regated))
    _kill_when(process, lambda: _runs(root) > runs)  # the MLflow run of this registration has started

    assert _database_intact(root)
    assert registry_state(trained_copy)["aliases"] == registry["aliases"]
    assert output_digests(root, skip=kept) == before  # registration.json, report
    _run("stage", "register", "--params", str(regated))
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
    # a second setting that changes no figure: two identical runs would register one version, by design
    other_tie = params_with(root, "other-tie", **{"gates.champion.superiority": False, "gates.max_model_bytes": 10**9})
    registry, runs = registry_state(trained_copy), _runs(root)

    processes = [_spawn("stage", "register", "--params", str(params)) for params in (tie, other_tie)]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]

    after = registry_state(trained_copy)
    assert _database_intact(root) and _runs(root) == runs + 2
    assert after["versions"] == [*registry["versions"], 2, 3]
    assert {after["aliases"]["champion"], after["aliases"]["previous"]} == {"2", "3"}, after["aliases"]


def test_a_dvc_stage_waits_for_a_training_run_holding_the_lock(trained_copy: Path) -> None:
    """`dvc repro` runs each stage as `optiflow stage NAME`: it takes the same training lock as `optiflow train`, so it
    cannot mix its outputs with those of a run in progress."""
    root = trained_copy.parent
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from flows.training import training_lock\n"
         f"with training_lock({str(root)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    before = output_digests(root)
    stage = _spawn("stage", "split", "--params", str(trained_copy))
    try:
        lines = []
        while not lines or "another training run holds" not in lines[-1]:  # it says so before it waits
            ready, _, _ = select.select([stage.stderr], [], [], 120)
            assert ready, "the waiting stage said nothing for 120 s:\n" + "".join(lines)
            lines.append(stage.stderr.readline())
            assert lines[-1] and len(lines) < 100, "".join(lines)
        assert stage.poll() is None and output_digests(root) == before
    finally:
        holder.communicate("", timeout=30)
    _, stderr = stage.communicate(timeout=600)
    assert stage.returncode == 0, stderr[-3000:]


def test_a_stage_refuses_inputs_another_run_made_for_other_settings(trained_copy: Path) -> None:
    """A run with other settings replaced the splits (as `optiflow train -S split.test_size=...` beside `dvc repro`
    would): registering now would record the other run's model under this run's params. The lineage record refuses."""
    root = trained_copy.parent
    other = params_with(root, "other-split", **{"split.test_size": 0.25})
    _run("stage", "split", "--params", str(other))
    registry = registry_state(trained_copy)
    done = subprocess.run(_cli("stage", "register", "--params", str(trained_copy)), cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "stage register: its input(s)" in done.stderr and "were made by stage split for other inputs" in done.stderr
    assert "Traceback" not in done.stderr and registry_state(trained_copy) == registry


@pytest.mark.slow
def test_a_killed_run_leaves_no_prefect_server_behind(trained_copy: Path, tmp_path: Path) -> None:
    """SIGKILL leaves the run's ephemeral Prefect server running; the next run stops it instead of adding one."""
    from flows.servers import _alive, ephemeral_servers, orphaned_servers

    process = _spawn("train", "--params", str(trained_copy))  # a flow run: Prefect starts a temporary server
    deadline = time.monotonic() + 300
    while not [pid for pid, owner in ephemeral_servers().items() if owner == process.pid]:
        assert process.poll() is None and time.monotonic() < deadline, "no ephemeral server seen"
        time.sleep(0.1)
    (server,) = [pid for pid, owner in ephemeral_servers().items() if owner == process.pid]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert server in orphaned_servers()  # left behind: its starter is gone

    _run(
        "predict",
        "--params",
        str(trained_copy),
        "--input",
        str(trained_copy.parent / "data" / "input.csv"),
        "--output",
        str(tmp_path / "scored.csv"),
    )  # any command stops what a killed run left behind
    deadline = time.monotonic() + 60
    while _alive(server, Path("/proc")):
        assert time.monotonic() < deadline, f"orphaned server {server} still runs"
        time.sleep(0.2)
    assert orphaned_servers() == []


def test_a_read_only_tracking_store_is_one_clear_error_before_anything_is_registered(trained_copy: Path) -> None:
    root = trained_copy.parent
    registry = registry_state(trained_copy)
    if subprocess.run(["chattr", "+i", str(root / "mlflow.db")], capture_output=True).returncode != 0:
        pytest.skip("this file system cannot make a file immutable (chattr +i)")
    try:  # immutable: even root cannot write it, as a read-only mount or a restored read-only file would behave
        done = subprocess.run(_cli("stage", "register", "--params", str(trained_copy)), cwd=REPO, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", str(root / "mlflow.db")], check=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "is unavailable or read-only" in done.stderr and "attempt to write a readonly database" in done.stderr
    assert registry_state(trained_copy) == registry


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "-S", "split.test_size=[0.2, {"), "override 'split.test_size': not a valid YAML value"),
        (("predict", "--input", "data/input.csv", "--output", "data/input.csv/x.csv"), "data/input.csv"),
        (("dvc-yaml", "--output", "params.yaml/dvc.yaml"), "params.yaml"),
        (("stage", "nowhere"), "unknown stage 'nowhere'"),
    ],
    ids=["bad-yaml-through-S", "output-under-a-file", "missing-directory", "unknown-stage"],
)
def test_expected_failures_end_in_one_line_and_exit_2(trained_copy: Path, args: tuple[str, ...], message: str) -> None:
    root = trained_copy.parent
    before, registry = output_digests(root), registry_state(trained_copy)
    done = subprocess.run(_cli(*args, "--params", str(trained_copy)), cwd=root, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("optiflow: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert output_digests(root) == before and registry_state(trained_copy) == registry


def test_a_tampered_registered_model_is_refused_by_every_loader(trained_copy: Path) -> None:
    """No loader runs code or deserialises a file from the artifact store before checking it: MLflow's (what
    `mlflow models serve` runs), Optiflow's (predict) and the API's startup all refuse a changed model file."""
    import mlflow
    from fastapi.testclient import TestClient

    from optiflow.errors import IntegrityError
    from optiflow.release.registry import connect, load_registered
    from optiflow.serving.api import create_app

    config = load_config(trained_copy)
    connect(config)
    (model_file,) = [p for p in (trained_copy.parent / "mlartifacts").rglob("data/optiflow/candidate/*.skops")][:1]
    model_file.write_bytes(model_file.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(IntegrityError, match="expected sha256"):
        mlflow.pyfunc.load_model("models:/optiflow-churn@champion")
    with pytest.raises(IntegrityError, match="expected sha256"):
        load_registered("optiflow-churn", alias="champion")
    with pytest.raises(IntegrityError, match="expected sha256"), TestClient(create_app(config)):
        pass


def test_a_champion_set_by_hand_on_a_rejected_version_serves_degraded(trained_copy: Path) -> None:
    from fastapi.testclient import TestClient
    from mlflow import MlflowClient

    from optiflow.release.registry import PROMOTION_TAG, connect
    from optiflow.serving.api import create_app

    config = load_config(trained_copy)
    connect(config)
    MlflowClient().set_model_version_tag("optiflow-churn", "1", PROMOTION_TAG, "rejected")
    with TestClient(create_app(config)) as client:
        health = client.get("/health").json()
    assert health["status"] == "degraded" and "did not pass its promotion gates" in health["problems"][0]


@pytest.mark.slow
def test_serve_api_holds_under_abuse(trained_copy: Path, tmp_path: Path) -> None:
    """`optiflow serve-api` as started from the CLI, attacked as a hostile client would: rotating keys and forged
    forwarded headers get no fresh rate limit, a silent connection is cut, a wrong content type and a boolean
    number are refused, /docs and internal lineage stay hidden, and a restored mlflow.db is followed."""
    import hashlib
    import shutil
    import socket

    import httpx
    from mlflow import MlflowClient

    root = trained_copy.parent
    key = "a-long-random-client-key"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {
        "serve.port": port, "serve.rate_limit_per_minute": 3, "serve.timeout_seconds": 1,
        "serve.api_keys_sha256": f'["{hashlib.sha256(key.encode()).hexdigest()}"]',
        "serve.trusted_proxies": "[10.0.0.1]", "serve.reload_seconds": 0.5,
    }  # fmt: skip
    flags = [item for name, value in settings.items() for item in ("-S", f"{name}={value}")]
    server = subprocess.Popen(_cli("serve-api", "--params", str(trained_copy), *flags), cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url, row = f"http://127.0.0.1:{port}", pd.read_csv(root / "data" / "input.csv").drop(columns=["churn"]).iloc[0]
    body = {"rows": [json.loads(row.to_json())]}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[0][-3000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.3)
        forged = [{"x-api-key": f"guess{i}", "x-forwarded-for": f"1.1.1.{i}"} for i in range(6)]
        guesses = [httpx.post(f"{url}/predict", json=body, headers=headers) for headers in forged]
        assert [answer.status_code for answer in guesses] == [401] * 6
        good = {"x-api-key": key}
        as_csv = httpx.post(f"{url}/predict", content=json.dumps(body), headers={**good, "content-type": "text/csv"})
        assert as_csv.status_code == 415
        boolean = {"rows": [{**body["rows"][0], "tenure": True}]}
        assert httpx.post(f"{url}/predict", json=boolean, headers=good).status_code == 422
        forwarded = [{**good, "x-forwarded-for": f"2.2.2.{i}"} for i in range(2)]
        answers = [httpx.post(f"{url}/predict", json=body, headers=headers) for headers in forwarded]
        assert [answer.status_code for answer in answers] == [200, 429]  # 3 per minute: forged hops add none
        assert httpx.get(f"{url}/docs").status_code == 404 and httpx.get(f"{url}/openapi.json").status_code == 404
        metadata = httpx.get(f"{url}/metadata", headers=good).json()
        assert "optiflow.gates" not in json.dumps(metadata) and "rollback" not in json.dumps(metadata)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as silent:
            silent.sendall(b"GET /health HTTP/1.1\r\n")
            assert silent.recv(100) == b""  # cut after serve.timeout_seconds, not held open
        with socket.create_connection(("127.0.0.1", port), timeout=20) as gone:
            gone.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode() +
                         b"\r\nContent-Type: application/json\r\nContent-Length: 99\r\n\r\n{")  # fmt: skip
        backup = tmp_path / "mlflow-backup.db"
        shutil.copy2(root / "mlflow.db", backup)
        restored = MlflowClient(tracking_uri=f"sqlite:///{backup}", registry_uri=f"sqlite:///{backup}")
        restored.delete_registered_model_alias("optiflow-churn", "champion")  # the backup predates the champion
        shutil.copy2(backup, root / "mlflow.db.new")
        (root / "mlflow.db.new").replace(root / "mlflow.db")  # restored from a backup: a new file
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/health").json()["status"] != "degraded":
            assert time.monotonic() < deadline, "the server did not follow the restored database"
            time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        log = server.communicate(timeout=60)[0]
    assert key not in log and "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert hashlib.sha256(key.encode()).hexdigest()[:12] in log
