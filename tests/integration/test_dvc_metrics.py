"""What `dvc metrics`, `dvc exp show` and `dvc plots show` give a person on the session's trained project, made a
git + DVC repository with the shipped .gitignore and the dvc.yaml `optiflow dvc-yaml` renders for it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from optiflow.config import load_config
from tests.conftest import REPO

HEADLINE_COLUMNS = r"^(test|gates|model)/"  # what docs/operations.md tells people to keep in `dvc exp show`


def _run(args: list[str], cwd: Path, **env: str) -> str:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env}
    done = subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _commit(root: Path, message: str) -> None:
    _run(["git", "add", "-A"], root)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", message], root)


@pytest.fixture
def repo(trained_copy: Path) -> Path:
    root = trained_copy.parent
    shutil.copy2(REPO / ".gitignore", root / ".gitignore")
    _run([sys.executable, "-m", "flows", "dvc-yaml", "--params", str(trained_copy), "--output", "dvc.yaml"], root)
    _run(["git", "init", "--quiet"], root)
    _run(["dvc", "init", "--quiet"], root)
    _commit(root, "trained")
    return root


def test_dvc_metrics_are_the_headline_kept_in_git_and_diff_against_the_last_commit(repo: Path) -> None:
    config = load_config(repo / "params.yaml")
    headline = json.loads(config.path("headline").read_text())
    assert "reports/metrics.json" in _run(["git", "ls-files"], repo).split()  # so `dvc metrics diff HEAD~1` reads it
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], repo))
    figures = shown[""]["data"]["reports/metrics.json"]["data"]
    assert figures == headline and len(figures) <= 20
    assert {"test/roc_auc", "gates/passed", "gates/failed", "model/latency_ms_per_1k_rows", "model/bytes"} <= set(
        figures
    )
    assert figures["test/roc_auc"] == json.loads(config.path("metrics").read_text())["test"]["roc_auc"]

    config.path("headline").write_text(json.dumps({**headline, "test/roc_auc": headline["test/roc_auc"] - 0.01}))
    _commit(repo, "a worse run")
    diff = json.loads(_run(["dvc", "metrics", "diff", "HEAD~1", "--json"], repo))["reports/metrics.json"]
    assert diff["test/roc_auc"]["old"] == headline["test/roc_auc"]
    assert diff["test/roc_auc"]["diff"] == pytest.approx(-0.01)


def test_dvc_exp_show_reads_the_headline_in_120_columns(repo: Path) -> None:
    headline = json.loads((repo / "reports/metrics.json").read_text())
    table = _run(
        ["dvc", "exp", "show", "--no-pager", "--only-changed", "--keep", HEADLINE_COLUMNS], repo, COLUMNS="120"
    )
    lines = table.splitlines()
    assert lines and max(len(line) for line in lines) <= 120, table
    header = next(line for line in lines if "Experiment" in line)
    assert re.findall(r"\S+/\S+", header)[:4] == list(headline)[:4], table  # the most read figures, in full
    assert f"{headline['test/roc_auc']:.5f}" in table


def _in_a_terminal(args: list[str], cwd: Path, **env: str) -> str:
    """What ``args`` print to a terminal (a pseudo-terminal: DVC pages only there), ANSI colours removed."""
    import pty

    leader, follower = pty.openpty()
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env}
    process = subprocess.Popen(args, cwd=cwd, env=environment, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=300) == 0, b"".join(chunks).decode()[-3000:]
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r", "")


def test_plain_dvc_exp_show_opens_on_the_headline_in_120_columns(repo: Path) -> None:
    """Plain `dvc exp show` in a terminal pages the table through `less -S`, which shows each line's first 120
    characters: the experiment, its date and the headline figures, in full. (``cat`` stands in for less here.)"""
    headline = json.loads((repo / "reports/metrics.json").read_text())
    table = _in_a_terminal(["dvc", "exp", "show"], repo, COLUMNS="120", DVC_PAGER="cat")
    screen = [line[:120] for line in table.splitlines() if line.strip()]
    header = next(line for line in screen if "Experiment" in line)
    assert re.findall(r"\S+/\S+", header)[:5] == list(headline)[:5], table[:3000]
    workspace = next(line for line in screen if line.split()[0] == "workspace")
    assert f"{headline['test/roc_auc']:.5f}" in workspace, table[:3000]


def test_dvc_plots_show_renders_every_plot_without_network(repo: Path) -> None:
    _run(["dvc", "plots", "show"], repo)
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert not re.search(r"<script[^>]+src=[\"']https?:", page), "the page loads scripts from the network"
    images = re.findall(r"<img[^>]+src=\"([^\"]+)\"", page)
    assert sorted(Path(image).name.split("_")[-1] for image in images) == ["confusion.png", "pr.png", "roc.png"]
    assert all((repo / "dvc_plots" / image).stat().st_size > 1000 for image in images)
