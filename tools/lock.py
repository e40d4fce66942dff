"""Add sha256 hashes to the lock files, so `pip install --require-hashes` refuses any file but the one locked.

The hashes come from pip itself: `pip install --dry-run --report` resolves every pin (no install) with this
machine's pip configuration (the package registry, its mirror and the local wheel folder holding the CPU build of
torch) and reports the sha256 of the file it would install. Only that file is locked: in hash-checking mode pip
prefers a file whose hash an index announces over a local one, so locking the registry's torch too would swap the
CPU build for the registry's CUDA build. Run it after changing a pin: `python -m tools.lock` (`make lock`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.audit import LOCKS

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins(lock: Path) -> list[str]:
    """The ``name==version`` lines of a lock file, hashes and continuation lines dropped."""
    return [match.group(0) for line in lock.read_text().splitlines() if (match := PIN.match(line.strip()))]


def reported_hashes(requirements: list[str]) -> dict[str, set[str]]:
    """sha256 per normalised package name of the files pip would install for ``requirements``."""
    with tempfile.TemporaryDirectory(prefix="optiflow-lock-") as folder:
        listing, report = Path(folder) / "requirements.txt", Path(folder) / "report.json"
        listing.write_text("\n".join(requirements) + "\n")
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet"]
        command += ["--report", str(report), "-r", str(listing)]
        subprocess.run(command, check=True, capture_output=True, text=True)
        installs = json.loads(report.read_text())["install"]
    hashes: dict[str, set[str]] = {}
    for item in installs:
        digest = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        if digest:
            hashes.setdefault(_normalise(item["metadata"]["name"]), set()).add(digest)
    return hashes


def hashed_lock(lock: Path) -> str:
    """The lock file's pins, each followed by the sha256 of the file pip installs for it."""
    requirements = pins(lock)
    found = reported_hashes(requirements)
    lines = []
    for requirement in requirements:
        digests = sorted(found.get(_normalise(requirement.split("==")[0]), ()))
        if not digests:
            raise SystemExit(f"{lock}: pip reported no sha256 for {requirement}")
        lines.append(" \\\n".join([requirement, *(f"    --hash=sha256:{digest}" for digest in digests)]))
    return "\n".join(lines) + "\n"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(root: Path = Path(".")) -> int:
    for lock in LOCKS:
        (root / lock).write_text(hashed_lock(root / lock))
        print(f"{lock}: {len(pins(root / lock))} pins hashed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
