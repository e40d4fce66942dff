"""URI redaction: the one function every log line, error and report passes URIs through."""

from __future__ import annotations

from optiflow.config import redact_uri


def test_redaction_hides_only_the_password() -> None:
    assert redact_uri("postgresql+psycopg2://u:s3cr3t@db:5432/optuna") == "postgresql+psycopg2://u:***@db:5432/optuna"
    assert redact_uri("postgresql://u@db/optuna") == "postgresql://u@db/optuna"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact_uri("store postgresql://u:pw@db/x is down") == "store postgresql://u:***@db/x is down"
