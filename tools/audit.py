"""Audit the locked dependency sets for known vulnerabilities with pip-audit, and say plainly what was checked.

pip-audit reports "No known vulnerabilities found" even when it could not look a single package up (the
vulnerability service unreachable, as on an offline CI machine); this wrapper counts audited vs skipped packages.
Exit 1 only for a known vulnerability; an unreachable service is reported as NOT AUDITED and exits 0, so CI
without that service still passes its tests but says loudly that the audit did not happen.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

LOCKS = ("requirements.lock", "requirements-dev.lock")


def audit(lock: Path, timeout: int = 30) -> dict[str, Any] | str:
    """pip-audit's JSON report for one lock file, or the reason it produced none."""
    command = [
        sys.executable, "-m", "pip_audit", "-r", str(lock), "--no-deps", "--disable-pip",
        "--progress-spinner", "off", "--timeout", str(timeout), "-f", "json",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "pip-audit timed out"
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"pip-audit failed (exit {done.returncode}): {last[:300]}"


def summarise(lock: str, report: dict[str, Any] | str) -> tuple[list[str], bool]:
    """Lines for a person, and whether a known vulnerability was found."""
    if isinstance(report, str):
        return [f"{lock}: NOT AUDITED: {report}"], False
    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if "skip_reason" in d]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    lines = [f"{lock}: {len(dependencies) - len(skipped)} of {len(dependencies)} packages audited"]
    if skipped:
        state = "NOT AUDITED" if len(skipped) == len(dependencies) else "partly audited"
        lines.append(f"  {state}: {len(skipped)} skipped, e.g. {skipped[0]['skip_reason']}")
    for dependency in vulnerable:
        ids = ", ".join(v["id"] + (f" (fixed in {', '.join(v['fix_versions'])})" if v.get("fix_versions") else "")
                        for v in dependency["vulns"])  # fmt: skip
        lines.append(f"  VULNERABLE {dependency['name']}=={dependency['version']}: {ids}")
    if not vulnerable and len(skipped) < len(dependencies):
        lines.append("  no known vulnerabilities in the audited packages")
    return lines, bool(vulnerable)


def main(root: Path = Path(".")) -> int:
    found = False
    for lock in LOCKS:
        lines, vulnerable = summarise(lock, audit(root / lock))
        print("\n".join(lines))
        found = found or vulnerable
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
