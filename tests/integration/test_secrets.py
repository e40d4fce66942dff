"""Credentials come only from the environment: never in params.yaml, MLflow params or tags, reports or logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from optiflow.config import load_config, redact_uri
from optiflow.errors import ConfigError
from tasks.register import register

REPO = Path(__file__).resolve().parents[2]
SECRET = "hunter2-not-a-real-password"
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key|credential)", re.IGNORECASE)
URI_WITH_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:[^@/\s]+@")


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(tree, list):
        for value in tree:
            yield from _leaves(value, prefix)
    else:
        yield prefix.rstrip("."), tree


def test_shipped_params_hold_no_credentials() -> None:
    text = (REPO / "params.yaml").read_text()
    assert not URI_WITH_PASSWORD.search(text)
    for key, value in _leaves(yaml.safe_load(text)):
        assert not (SECRET_KEY.search(key) and value), f"{key} looks like a credential in params.yaml"


def test_a_password_in_the_tracking_uri_is_refused_without_echoing_it(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "runtime.yaml").write_text(f"tracking:\n  uri: postgresql://optiflow:{SECRET}@db:5432/mlflow\n")
    with pytest.raises(ConfigError, match="contains a password") as raised:
        load_config(tmp_path / "params.yaml")
    assert SECRET not in str(raised.value)


def test_redact_uri_hides_passwords_only() -> None:
    assert redact_uri(f"postgresql://u:{SECRET}@db/m") == "postgresql://u:***@db/m"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_a_tracking_password_from_the_environment_never_reaches_outputs_mlflow_or_logs(
    trained_copy: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The effective URI carries a password (as MLFLOW_TRACKING_URI would); MLflow is handed the project's sqlite
    store in its place, so everything Optiflow writes or logs around it is checked."""
    import mlflow

    import optiflow.release.registry as registry

    config = load_config(trained_copy)
    store = registry.tracking_uri(config.params.tracking, config.root)
    secret_uri = f"http://alice:{SECRET}@tracking.internal:5000"
    monkeypatch.setattr(registry, "tracking_uri", lambda tracking, root: secret_uri)
    for setter in ("set_tracking_uri", "set_registry_uri"):
        original = getattr(mlflow, setter)
        monkeypatch.setattr(
            mlflow, setter, lambda uri, original=original: original(store if uri == secret_uri else uri)
        )
    caplog.set_level(logging.DEBUG)

    result = register.fn(load_config(trained_copy))

    root = trained_copy.parent
    assert SECRET not in (root / "reports/registration.json").read_text()
    assert SECRET not in str(result) and SECRET not in caplog.text
    run = MlflowClient().get_run(result["run_id"])
    assert not any(SECRET in str(v) for v in (*run.data.params.values(), *run.data.tags.values()))
    version = MlflowClient().get_model_version(result["model_name"], result["version"])
    assert not any(SECRET in str(v) for v in version.tags.values()) and SECRET not in (version.description or "")
