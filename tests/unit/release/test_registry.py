"""Promotion, rollback and the tracking location against a real (temporary, SQLite) MLflow registry."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from optiflow.assess.gates import GateReport, GateResult
from optiflow.config import TrackingParams
from optiflow.errors import IntegrityError, OptiflowError
from optiflow.release.registry import (
    DESCRIPTION_LIMIT,
    apply_decision,
    champion_version,
    git_state,
    load_registered,
    registry_lock,
    rollback,
    tracking_uri,
    verify_digests,
    version_description,
)

PASS = GateReport((GateResult("quality", "roc_auc", 0.85, 0.8, ">=", True),))
FAIL = GateReport(
    (
        GateResult("quality", "roc_auc", 0.85, 0.8, ">=", True),
        GateResult("champion", "roc_auc_difference_lower_bound", -0.004, 0.0, ">", False, "superiority"),
        GateResult("budget", "model_bytes", 9e6, 5e6, "<=", False),
    )
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # MLflow exports them; keep the environment clean
        os.environ.pop(key, None)
    yield root
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # or later tests would all use that default store
        os.environ.pop(key, None)


def _model(root: Path, name: str, versions: int) -> list[str]:
    client = MlflowClient()
    client.create_registered_model(name)
    (root / name).mkdir()
    return [str(client.create_model_version(name, source=str(root / name)).version) for _ in range(versions)]


def _aliases(name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in MlflowClient().get_registered_model(name).aliases.items()}


def test_first_passing_version_becomes_champion_without_previous(registry: Path) -> None:
    (v1,) = _model(registry, "first", 1)
    decision = apply_decision("first", v1, "champion", "previous", PASS, champion=None)
    assert decision.promote and decision.outcome == "promoted" and decision.previous_version is None
    assert _aliases("first") == {"champion": "1"}
    assert MlflowClient().get_model_version("first", v1).tags["optiflow.promotion"] == "promoted"


def test_worse_challenger_is_rejected_and_no_alias_moves(registry: Path) -> None:
    v1, v2, v3 = _model(registry, "worse", 3)
    MlflowClient().set_registered_model_alias("worse", "champion", v2)
    MlflowClient().set_registered_model_alias("worse", "previous", v1)
    decision = apply_decision("worse", v3, "champion", "previous", FAIL, champion=v2)
    assert not decision.promote and decision.outcome == "rejected"
    assert _aliases("worse") == {"champion": "2", "previous": "1"}
    tags = MlflowClient().get_model_version("worse", v3).tags
    assert tags["optiflow.promotion"] == "rejected"
    assert "2 of 3 gates failed" in tags["optiflow.gates"]
    assert "champion roc_auc_difference_lower_bound: observed -0.004 vs threshold > 0" in tags["optiflow.gates"]
    assert "budget model_bytes: observed 9e+06 vs threshold <= 5e+06" in tags["optiflow.gates"]


def test_better_challenger_is_promoted_and_old_champion_becomes_previous(registry: Path) -> None:
    v1, v2 = _model(registry, "better", 2)
    MlflowClient().set_registered_model_alias("better", "champion", v1)
    decision = apply_decision("better", v2, "champion", "previous", PASS, champion=v1)
    assert decision.promote and decision.previous_version == v1
    assert _aliases("better") == {"champion": "2", "previous": "1"}


def test_a_release_policy_holds_a_passing_version_as_challenger_until_its_release_ends(registry: Path) -> None:
    from optiflow.release.rollout import end_release, release_state, start_release

    v1, v2, v3 = _model(registry, "held", 3)
    first = apply_decision("held", v1, "champion", "previous", PASS, champion=None, hold=True)
    assert first.promote and _aliases("held") == {"champion": "1"}  # nothing to compare with: promoted at once
    held = apply_decision("held", v2, "champion", "previous", PASS, champion=v1, hold=True)
    assert not held.promote and held.staged and held.outcome == "challenger"
    assert apply_decision("held", v3, "champion", "previous", FAIL, champion=v1, hold=True).outcome == "rejected"
    assert _aliases("held") == {"champion": "1"}
    with pytest.raises(OptiflowError, match="v3 cannot be released: it did not pass its gates"):
        start_release("held", "champion", "challenger", v3, "canary", 0.2, 10.0)
    start_release("held", "champion", "challenger", v2, "canary", 0.2, 10.0)
    state = release_state("held", "champion", "challenger")
    assert (state.challenger, state.champion, state.mode, state.share, state.started_at) == (
        "2",
        "1",
        "canary",
        0.2,
        10.0,
    )
    end_release(state, "promoted", "champion", "previous", "challenger", {"by": "ana", "reason": "ok", "at": "t"})
    assert _aliases("held") == {"champion": "2", "previous": "1"}
    assert release_state("held", "champion", "challenger") is None
    tags = MlflowClient().get_model_version("held", v2).tags
    assert tags["optiflow.promotion"] == "promoted" and tags["optiflow.release.by"] == "ana"
    with pytest.raises(OptiflowError, match="the release of v2 ended already"):
        end_release(state, "aborted", "champion", "previous", "challenger", {"by": "bo", "reason": "late", "at": "t"})


def test_rollback_restores_previous_and_records_who_why_when(registry: Path) -> None:
    v1, v2 = _model(registry, "rollback", 2)
    apply_decision("rollback", v1, "champion", "previous", PASS, champion=None)
    apply_decision("rollback", v2, "champion", "previous", PASS, champion=v1)
    done = rollback("rollback", "champion", "previous", user="ana", reason="bad scores", at="2026-01-02T03:04:05+00:00")
    assert (done.restored, done.rolled_back) == ("1", "2")
    assert _aliases("rollback") == {"champion": "1"}  # `previous` is removed, not pointed at the rolled-back version
    restored = MlflowClient().get_model_version("rollback", v1).tags
    assert restored["optiflow.rollback.restored_by"] == "ana"
    assert restored["optiflow.rollback.restored_reason"] == "bad scores"
    assert restored["optiflow.rollback.restored_at"] == "2026-01-02T03:04:05+00:00"
    assert restored["optiflow.rollback.restored_from_version"] == "2"
    removed = MlflowClient().get_model_version("rollback", v2).tags
    assert removed["optiflow.promotion"] == "rolled back" and removed["optiflow.rollback.removed_by"] == "ana"
    with pytest.raises(OptiflowError, match="no version holds the alias 'previous'"):
        rollback("rollback", "champion", "previous", user="ana", reason="again", at="now")
    assert champion_version("rollback", "champion") == "1"


def test_registry_lock_serialises_holders(tmp_path: Path) -> None:
    """a holds the lock until told to let go; b, started meanwhile, must not get in before that (events, no sleeps)."""
    order: list[str] = []
    inside = {label: threading.Event() for label in ("a", "b")}
    let_go = threading.Event()

    def hold(label: str) -> None:
        with registry_lock(tmp_path):
            order.append(f"{label}-in")
            inside[label].set()
            if label == "a":
                let_go.wait(timeout=30)
            order.append(f"{label}-out")

    threads = {label: threading.Thread(target=hold, args=(label,)) for label in ("a", "b")}
    threads["a"].start()
    assert inside["a"].wait(timeout=30)
    threads["b"].start()
    assert not inside["b"].wait(timeout=0.5)  # b is blocked while a holds the lock
    let_go.set()
    for thread in threads.values():
        thread.join()
    assert order == ["a-in", "a-out", "b-in", "b-out"]
    assert (tmp_path / ".optiflow-registry.lock").is_file()


def test_relative_sqlite_uri_resolves_against_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracking_uri(TrackingParams(uri="sqlite:///mlflow.db"), tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking_uri(TrackingParams(uri="sqlite:////abs/m.db"), tmp_path) == "sqlite:////abs/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://127.0.0.1/mlflow")
    assert tracking_uri(TrackingParams(), tmp_path) == "postgresql://127.0.0.1/mlflow"


def test_verify_digests_names_every_changed_missing_and_unrecorded_file(tmp_path: Path) -> None:
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "artifacts" / "model.skops").write_bytes(b"tampered")
    (tmp_path / "artifacts" / "extra.py").write_text("import os\n")
    recorded = {"MLmodel": hashlib.sha256(b"flavors: {}\n").hexdigest(), "artifacts/model.skops": "0" * 64}
    recorded["artifacts/meta.json"] = "1" * 64
    with pytest.raises(IntegrityError) as raised:
        verify_digests(tmp_path, recorded, "m v1")
    message = str(raised.value)
    assert message.startswith("m v1: stored files do not match the sha256 recorded at registration; refusing to load")
    observed = hashlib.sha256(b"tampered").hexdigest()
    assert f"artifacts/model.skops: expected sha256 {'0' * 64}, observed {observed}" in message
    assert f"artifacts/meta.json: expected sha256 {'1' * 64}, observed missing" in message
    assert "artifacts/extra.py: not in the registry record" in message
    assert "MLmodel" not in message.split("\n", 1)[1]


def test_a_version_without_a_sha256_record_is_refused(registry: Path) -> None:
    (v1,) = _model(registry, "unverifiable", 1)
    with pytest.raises(IntegrityError, match=r"unverifiable v1: no optiflow\.artifacts\.sha256 tag"):
        load_registered("unverifiable", version=v1)
    with pytest.raises(OptiflowError, match="registered model 'unverifiable' has no alias 'champion'"):
        load_registered("unverifiable", alias="champion")


def test_git_state_counts_tracked_inputs_as_dirty_but_not_dvc_lock(tmp_path: Path) -> None:
    """`dvc repro` rewrites dvc.lock with this run's output hashes before register tags the version."""
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True)

    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    git("init", "--quiet")
    git("add", "-A")
    git("commit", "--quiet", "-m", "snapshot")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert git_state(tmp_path)["git.dirty"] == "false"
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    assert git_state(tmp_path)["git.dirty"] == "true"


def test_a_long_model_card_is_cut_at_a_line_to_fit_the_registry_keeping_the_decision() -> None:
    """MLflow's description column holds 5,000 characters (PostgreSQL refuses more; SQLite would not notice)."""
    rows = "\n".join(f"| row {i} | {'x' * 40} |" for i in range(300))
    card = f"# Model card\n\n## Slices\n{rows}\n\n## Gate decisions\n**promoted** (compared with champion v1)\n"
    description = version_description(card)
    assert len(description) <= DESCRIPTION_LIMIT < len(card)
    kept, rest = description.split("\n\n… cut here")
    assert card.startswith(kept + "\n") and "model_card.html" in rest
    assert rest.endswith("\n## Gate decisions\n**promoted** (compared with champion v1)\n")
    assert version_description("short card") == "short card"


def test_a_torch_model_lists_torch_and_its_closure_hash_pinned_as_the_lock_holds() -> None:
    from optiflow.release.registry import MODEL_REQUIREMENTS, model_requirements

    plain = model_requirements("data/optiflow-0.1.0-py3-none-any.whl", "0" * 64)
    with_torch = model_requirements("data/optiflow-0.1.0-py3-none-any.whl", "0" * 64, (*MODEL_REQUIREMENTS, "torch"))
    assert not any(line.startswith("torch==") for line in plain)
    (torch_line,) = [line for line in with_torch if line.startswith("torch==")]
    assert torch_line.startswith(
        "torch==2.13.0 --hash=sha256:"
    )  # the locked version, whatever local label is installed
    packages = [line for line in with_torch if not line.startswith("--find-links ")]
    assert all("--hash=sha256:" in line for line in packages) and set(plain) < set(with_torch)


def test_a_process_builds_the_wheel_once_per_state_of_the_sources(tmp_path: Path, monkeypatch) -> None:
    """Each registration gets its own copy of the wheel; pip runs again only after a source file changed."""
    from optiflow.release import registry

    tree = tmp_path / "checkout"
    for name in registry.PACKAGE_FILES:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        if "." in name:
            (tree / name).write_text(name)
        else:
            (tree / name / "__pycache__").mkdir(parents=True)
            (tree / name / "__init__.py").write_text("")
    builds: list[bytes] = []

    def pip_wheel(target: Path) -> Path:
        builds.append((tree / "optiflow" / "__init__.py").read_bytes())
        wheel = target / f"optiflow-0.1.0-py3-none-any-{len(builds)}.whl"
        wheel.write_bytes(b"wheel %d" % len(builds))
        return wheel

    monkeypatch.setattr(registry, "SOURCE_TREE", tree)
    monkeypatch.setattr(registry, "_build_wheel", pip_wheel)
    monkeypatch.setattr(registry, "_WHEELS_BUILT", {})
    first, second = registry.build_wheel(tmp_path / "a"), registry.build_wheel(tmp_path / "b")
    (tree / "optiflow" / "__pycache__" / "x.pyc").write_bytes(b"compiled")  # not a source
    third = registry.build_wheel(tmp_path / "c")
    assert len(builds) == 1 and first.parent != second.parent != third.parent
    assert first.read_bytes() == second.read_bytes() == third.read_bytes() == b"wheel 1"

    (tree / "optiflow" / "__init__.py").write_text("VERSION = 2\n")
    changed = registry.build_wheel(tmp_path / "d")
    assert builds == [b"", b"VERSION = 2\n"] and changed.read_bytes() == b"wheel 2"
