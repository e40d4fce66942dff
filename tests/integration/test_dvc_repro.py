"""The shipped pipeline in a fresh copy of the repo: the Prefect flow (`make run`) reproduces every output hash in the
committed dvc.lock (`dvc repro`'s record) and meets the model-quality bar; one lineage for both paths: after the flow
`dvc repro` is a no-op with `dvc status` clean, and after `dvc repro` (here one finishing what a killed one left) the
flow is all cached. No path registers a second version. The tests run in file order, each on the state the one before
left. The pipeline runs once end to end here: the committed dvc.lock is what `dvc repro` wrote, so a second full run
through DVC would only recompute it.

Also the model-quality bar on the full shipped data (the Made-With-ML "model test").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from optiflow.config import load_config
from optiflow.release.registry import connect
from tests.conftest import copy_repo, output_digests, registry_state

# The flows run as processes report to the session's Prefect API (PREFECT_API_URL), as where a server is configured.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("flows_in_processes_reuse_the_session_api")]


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_repo(tmp_path_factory.mktemp("clone") / "optiflow")
    _run(["git", "init", "--quiet"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "snapshot"], root)
    return root


def _committed_lock(repo: Path) -> dict:
    """dvc.lock's stages as committed: what `dvc repro` recorded for this code, these params and the shipped data."""
    return yaml.safe_load(_run(["git", "show", "HEAD:dvc.lock"], repo))["stages"]


def _stages(repo: Path) -> list[str]:
    return list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])


def test_committed_dvc_lock_matches_the_code_and_params(repo: Path) -> None:
    """A fresh clone has no outputs, but every dependency and param must match dvc.lock (else commit dvc.lock)."""
    status = json.loads(_run(["dvc", "status", "--json", "--quiet"], repo) or "{}")
    stale = {
        stage: [
            (path, state)
            for change in changes
            if isinstance(change, dict)
            for kind in ("changed deps", "changed params")
            for path, state in change.get(kind, {}).items()
            if kind == "changed params" or state != "deleted"
        ]
        for stage, changes in status.items()
    }
    assert not any(stale.values()), stale
    assert sorted(_committed_lock(repo)) == sorted(_stages(repo)), "dvc.lock records a stage dvc.yaml no longer has"


def test_the_prefect_flow_reproduces_the_committed_dvc_lock_and_meets_the_quality_bar(repo: Path) -> None:
    """Every stage's outputs hash as `dvc repro` recorded them (but register's, whose outputs are the registration
    and its measured latency), so the flow and DVC give the same bytes; the flow commits them to dvc.lock."""
    _run([sys.executable, "-m", "flows", "train"], repo)
    by_prefect = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    by_dvc = _committed_lock(repo)
    for stage in _stages(repo):
        if stage != "register":
            assert by_prefect[stage]["outs"] == by_dvc[stage]["outs"], stage
    metrics = json.loads((repo / "reports/metrics.json").read_text())  # the headline, DVC's metrics file
    assert metrics["test/roc_auc"] >= 0.835, "quality bar: selected model's test ROC AUC on the shipped data"

    connect(load_config(repo / "params.yaml"))
    champion = MlflowClient().get_model_version_by_alias("optiflow-churn", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["git.commit"] == _run(["git", "rev-parse", "HEAD"], repo).strip()
    assert champion.tags["git.dirty"] == "false"
    assert champion.tags["data.sha256"] == load_config(repo / "params.yaml").params.data.sha256
    assert champion.tags["optiflow.promotion"] == "promoted"
    assert (repo / "reports/run_report.html").is_file()


def _dvc_status(repo: Path) -> dict:
    return json.loads(_run(["dvc", "status", "--json", "--quiet"], repo) or "{}")


def test_after_the_prefect_flow_dvc_status_is_clean_and_dvc_repro_is_a_no_op(repo: Path) -> None:
    """`make run && dvc repro`: the flow (previous test, every stage run) committed each stage to dvc.lock, and DVC
    finds nothing to run and registers nothing."""
    assert _dvc_status(repo) == {}
    before = registry_state(repo / "params.yaml")
    output = _run(["dvc", "repro"], repo)
    assert "Data and pipelines are up to date" in output and "Running stage" not in output, output[-2000:]
    assert all(f"Stage '{stage}' didn't change" in output for stage in _stages(repo)), output[-2000:]
    assert registry_state(repo / "params.yaml") == before


def test_bad_source_fails_dvc_repro_and_leaves_dvc_lock_outputs_and_champion(repo: Path) -> None:
    source = repo / "data/raw/wa_churn.csv.gz"
    original = source.read_bytes()
    before = output_digests(repo, skip=(".git", ".dvc/tmp", "data/raw", ".optiflow-registry.lock"))
    champion = registry_state(repo / "params.yaml")
    source.write_bytes(original[: len(original) // 2])  # truncated: also no longer the pinned sha256
    try:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        done = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    finally:
        source.write_bytes(original)
    assert done.returncode != 0
    assert "optiflow: error:" in done.stderr and "data.sha256 expects" in done.stderr, done.stderr[-2000:]
    assert output_digests(repo, skip=(".git", ".dvc/tmp", "data/raw", ".optiflow-registry.lock")) == before
    assert registry_state(repo / "params.yaml") == champion


def _running_stage(session: int, stage: str) -> bool:
    """Whether the `dvc repro` started in its own session has started the stage's command (a process in it). Killed
    then, DVC is waiting on the command; killed between stages, it may be inside its in-place rewrite of
    .dvc/tmp/rwlock and leave that file empty (DVC's window, not the one this test is about)."""
    for entry in Path("/proc").iterdir():
        try:
            ours = entry.name.isdigit() and os.getsid(int(entry.name)) == session
            if ours and (entry / "cmdline").read_bytes().endswith(f"flows\0stage\0{stage}\0".encode()):
                return True
        except OSError:  # the process ended meanwhile
            continue
    return False


def test_sigkill_during_dvc_repro_then_repro_finishes_and_the_prefect_flow_finds_it_all_done(repo: Path) -> None:
    """Kill `dvc repro` (and its stage process) while `explain` runs, after a param change that touches explain:
    finished stages stay recorded in dvc.lock, the champion does not move, and the next `dvc repro` skips what
    finished and completes the rest (explain, register). The Prefect flow then finds every stage's outputs in the
    shared record and runs nothing, registering no version."""
    params = repo / "params.yaml"
    original = params.read_text()
    line = "  max_rows: 500                           # test rows explained with SHAP"
    assert line in original
    params.write_text(original.replace(line, line.replace("500", "400")))
    aliases = registry_state(params)["aliases"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        process = subprocess.Popen(
            ["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while not _running_stage(process.pid, "explain"):
            assert process.poll() is None, process.communicate()[0][-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)

        assert registry_state(params)["aliases"] == aliases
        assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["explain"]
        assert not (repo / "reports/explain").exists() or (repo / "reports/explain/summary.json").is_file()
        output = _run(["dvc", "repro"], repo)
        assert "Stage 'evaluate' didn't change" in output and "Running stage 'explain'" in output, output[-2000:]
        assert "Running stage 'register'" in output and (repo / "reports/explain/summary.json").is_file()

        before = registry_state(params)
        summary = _run([sys.executable, "-m", "flows", "train"], repo)
        assert "Training run: 0 stage(s) ran, 9 cached" in summary, summary  # the summary's first line
        assert registry_state(params) == before and _dvc_status(repo) == {}
    finally:
        params.write_text(original)
