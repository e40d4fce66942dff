"""The audit wrapper tells "no vulnerabilities" apart from "nothing could be checked"."""

from __future__ import annotations

from tools.audit import summarise

SKIP = "Dependency not found on PyPI and could not be audited: numpy (2.3.0)"


def test_unreachable_service_is_reported_as_not_audited_and_does_not_fail() -> None:
    lines, vulnerable = summarise("requirements.lock", {"dependencies": [{"name": "numpy", "skip_reason": SKIP}]})
    assert not vulnerable and "0 of 1 packages audited" in lines[0] and "NOT AUDITED" in lines[1]
    lines, vulnerable = summarise("requirements.lock", "pip-audit failed (exit 1): ConnectionError")
    assert not vulnerable and "NOT AUDITED" in lines[0]


def test_a_known_vulnerability_fails_and_names_the_fix() -> None:
    report = {
        "dependencies": [
            {"name": "jinja2", "version": "3.1.2", "vulns": [{"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"]}]},
            {"name": "numpy", "version": "2.3.0", "vulns": []},
        ]
    }
    lines, vulnerable = summarise("requirements.lock", report)
    assert vulnerable and "2 of 2 packages audited" in lines[0]
    assert "  VULNERABLE jinja2==3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in 3.1.3)" in lines


def test_clean_audit_says_so() -> None:
    lines, vulnerable = summarise("x.lock", {"dependencies": [{"name": "numpy", "version": "2.3.0", "vulns": []}]})
    assert not vulnerable and lines[-1].endswith("no known vulnerabilities in the audited packages")
