"""URI redaction: the one function every log line, error and report passes URIs through, and the log-record hook
that applies it to every record of a process."""

from __future__ import annotations

import json
import logging

import pytest

from optiflow.config import install_log_redaction, load_config, redact_uri
from optiflow.errors import ConfigError

NASTY = ["s3cr3t", "p@ss@word", "pa/ss:wo#rd?x=1", "p%40ss%2Fw", "ünï©ødé", "a'b\"c`d", "trailing@", ":colon:"]


def test_redaction_hides_only_the_password() -> None:
    assert redact_uri("postgresql+psycopg2://u:s3cr3t@db:5432/optuna") == "postgresql+psycopg2://u:***@db:5432/optuna"
    assert redact_uri("postgresql://u@db/optuna") == "postgresql://u@db/optuna"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact_uri("store postgresql://u:pw@db/x is down") == "store postgresql://u:***@db/x is down"


@pytest.mark.parametrize("password", NASTY)
def test_nasty_passwords_never_survive_redaction(password: str) -> None:
    for text in (
        f"postgresql://optiflow:{password}@db:5432/mlflow",
        f"store 'mysql://user@corp:{password}@db/x' is down",
        f"postgresql://u@db/mlflow?sslmode=require&password={password}",
        f"https://host/api?access_token={password}&x=1",
    ):
        redacted = redact_uri(text)
        assert password not in redacted and "***" in redacted, (text, redacted)
    assert redact_uri(f"postgresql://optiflow:{password}@db:5432/mlflow").endswith("@db:5432/mlflow")


@pytest.mark.parametrize("password", [*NASTY, "with space"])
def test_a_credential_in_any_uri_setting_is_refused_without_echoing_it(tmp_path, password: str) -> None:
    (tmp_path / "params.yaml").write_text(
        "data: {source: d.csv, target: y, positive_label: 1, negative_label: 0}\n"
        "train: {families: {logistic_regression: {}}}\nregister: {model_name: m}\n"
    )
    for key, value in {
        "tracking.uri": f"postgresql://u:{password}@db/mlflow",
        "tune.storage": f"postgresql://u@db/optuna?password={password}",
        "orchestration.dask_address": f"tcp://u:{password}@scheduler:8786",
    }.items():
        with pytest.raises(ConfigError, match="contains a password or token") as raised:
            load_config(tmp_path / "params.yaml", {key: json.dumps(value)})  # -S reads YAML
        assert password not in str(raised.value)


def test_every_log_record_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    caplog.set_level(logging.INFO)
    log = logging.getLogger("optiflow.test")
    log.info("connecting to %s", "postgresql://u:p@ss@db/x")
    try:
        raise RuntimeError("cannot open postgresql://u:hunter2@db/x")
    except RuntimeError:
        log.exception("failed")
    assert "p@ss" not in caplog.text and "hunter2" not in caplog.text and "postgresql://u:***@db/x" in caplog.text
