"""Every read and write of an artifact. Writes go to a temporary sibling and are renamed into place,
so a crash or a full disk never leaves a half-written file where a reader (or DVC) would find it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from optiflow.errors import IntegrityError


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target`` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; artifacts are meant to be shared like any output
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces the folder ``target`` as a whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)
        retired = None
        if target.exists():
            retired = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, retired)
        os.replace(staging, target)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: Path, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: Path, payload: Any, sort_keys: bool = True) -> None:
    """Keys sorted (byte-stable whatever the build order) unless the payload's own order is meant to be read."""
    write_text(target, json.dumps(payload, indent=2, sort_keys=sort_keys, default=_json_default) + "\n")


def write_parquet(target: Path, frame: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)


def write_with(target: Path, writer: Callable[[Path], None]) -> None:
    """Atomic write through a library call that only accepts a path (plots, model files)."""
    with atomic_path(target) as tmp:
        writer(tmp)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def sha256_file(path: Path) -> str:
    return _file_digest(path, hashlib.sha256())


def md5_file(path: Path) -> str:
    """md5 of the file's bytes: the hash DVC records for a file output in dvc.lock (lineage, not security)."""
    return _file_digest(path, hashlib.md5(usedforsecurity=False))


def _file_digest(path: Path, digest: Any) -> str:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative POSIX path."""
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): sha256_file(path) for path in sorted(folder.rglob("*")) if path.is_file()
    }


def verify_digests(
    folder: Path, expected: dict[str, str], what: str, record: str = "the registry record", ignore: tuple[str, ...] = ()
) -> None:
    """Raise one IntegrityError listing every file of ``folder`` that is missing, altered or not in ``expected``
    (files named in ``ignore`` are skipped)."""
    observed = {name: digest for name, digest in file_digests(folder).items() if name not in ignore}
    problems = [
        f"  {name}: expected sha256 {digest}, observed {observed.get(name, 'missing')}"
        for name, digest in sorted(expected.items())
        if observed.get(name) != digest
    ]
    problems += [
        f"  {name}: not in {record} (observed {observed[name]})" for name in sorted(observed) if name not in expected
    ]
    if problems:
        raise IntegrityError(
            f"{what}: stored files do not match the sha256 recorded at registration; refusing to load:\n"
            + "\n".join(problems)
        )


def sha256_tree(path: Path) -> str:
    """Content hash of a file, or of a folder's files and their relative names."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(child.relative_to(path).as_posix().encode())
        digest.update(sha256_file(child).encode())
    return digest.hexdigest()


SQLITE = "sqlite:///"


def sqlite_file(uri: str | None) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute), None for any other URI."""
    return Path(uri[len(SQLITE) :]) if uri and uri.startswith(SQLITE) else None


def resolve_database_uri(uri: str | None, root: Path) -> str | None:
    """A relative SQLite path (``sqlite:///mlflow.db``) made absolute against the project root; other URIs as given.

    Settings name databases relative to the project, but MLflow, Optuna and the workers they start resolve a
    relative path against their own working folder."""
    database = sqlite_file(uri)
    if database is None or database.is_absolute():
        return uri
    return SQLITE + str((Path(root) / database).resolve())


def project_relative_uri(uri: str, root: Path) -> str:
    """For records kept with the project (reports/registration.json): a SQLite file inside ``root`` as a relative
    ``sqlite:///`` URI, so no absolute path of this checkout is written and a clone reads the same record; other
    URIs as given. The inverse of ``resolve_database_uri``."""
    database, base = sqlite_file(uri), Path(root).resolve()
    if database is None or not database.is_absolute() or not database.is_relative_to(base):
        return uri
    return SQLITE + database.relative_to(base).as_posix()


def finite_or_none(value: Any) -> float | None:
    """The value as a float, or None when it is missing, NaN or infinite: JSON (and MLflow, and people) have no NaN."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


@contextlib.contextmanager
def exclusive_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) across processes; ``on_wait`` is called once
    when another holder makes this one wait."""
    import fcntl

    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
