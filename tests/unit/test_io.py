"""Atomic writes: a failure mid-write leaves the previous artifact exactly as it was, and no temp files."""

from __future__ import annotations

from pathlib import Path

import pytest

from optiflow.io import atomic_dir, md5_file, sha256_file, write_json, write_with


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"auc": 0.8})

    def broken_writer(path: Path) -> None:
        path.write_text('{"auc": 0.')
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_with(target, broken_writer)
    assert target.read_text() == '{\n  "auc": 0.8\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_failed_folder_write_keeps_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "models"
    with atomic_dir(target) as staging:
        (staging / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "old"
    with atomic_dir(target) as staging:
        (staging / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["models"]


def test_file_digests_are_the_plain_content_hashes(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert md5_file(tmp_path / "f") == "900150983cd24fb0d6963f7d28e17f72"  # what DVC records in dvc.lock
    assert sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_store_inside_the_project_is_recorded_relative_and_resolves_back(tmp_path: Path) -> None:
    from optiflow.io import project_relative_uri, resolve_database_uri

    inside = resolve_database_uri("sqlite:///mlflow.db", tmp_path)
    assert inside == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert project_relative_uri(inside, tmp_path) == "sqlite:///mlflow.db"
    assert resolve_database_uri(project_relative_uri(inside, tmp_path), tmp_path) == inside
    elsewhere = f"sqlite:///{tmp_path.parent.resolve()}/shared.db"
    assert project_relative_uri(elsewhere, tmp_path) == elsewhere
    assert project_relative_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
