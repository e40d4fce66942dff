"""Stack settings and URLs: credentials come from the environment and never appear in a URL or a log line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import stack


def test_settings_come_from_the_environment_and_urls_carry_no_password(tmp_path: Path) -> None:
    env = {
        "OPTIFLOW_STACK_DIR": str(tmp_path / "s"),
        "OPTIFLOW_PG_PORT": "6543",
        "OPTIFLOW_PG_USER": "alice",
        "OPTIFLOW_PG_PASSWORD": "hunter2",
        "OPTIFLOW_MLFLOW_PORT": "5111",
        "OPTIFLOW_PREFECT_PORT": "4222",
        "OPTIFLOW_PG_BIN": "/opt/pg/bin",
    }
    settings = stack.StackSettings.from_env(tmp_path, env)
    assert settings.folder == tmp_path / "s" and settings.pg_bin == Path("/opt/pg/bin")
    exports = settings.exports()
    assert exports == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5111",
        "PREFECT_API_URL": "http://127.0.0.1:4222/api",
        "OPTIFLOW_TUNE_STORAGE": "postgresql+psycopg2://alice@127.0.0.1:6543/optuna",
        "PGPASSWORD": "hunter2",
    }
    assert "hunter2" not in settings.database_url("prefect", "postgresql+asyncpg")
    rows = stack.status(settings)
    assert [row["service"] for row in rows] == list(stack.SERVICES) and "hunter2" not in str(rows)
    assert {row["state"] for row in rows} == {"stopped"}


def test_a_missing_postgresql_install_says_how_to_get_it(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(stack, "Path", lambda *_: tmp_path / "nothing")
    with pytest.raises(stack.StackError, match="apt-get install -y postgresql"):
        stack.postgres_bin()


def test_docker_compose_runs_the_same_services_ports_and_databases_as_the_script(tmp_path: Path) -> None:
    import re

    import yaml

    from tests.conftest import REPO

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert tuple(compose["services"]) == stack.SERVICES
    defaults = stack.StackSettings.from_env(tmp_path, {"OPTIFLOW_PG_BIN": "/unused"})
    published = {name: service["ports"][0] for name, service in compose["services"].items()}
    assert published == {
        "postgres": f"127.0.0.1:${{OPTIFLOW_PG_PORT:-{defaults.pg_port}}}:5432",
        "mlflow": f"127.0.0.1:${{OPTIFLOW_MLFLOW_PORT:-{defaults.mlflow_port}}}:5000",
        "prefect": f"127.0.0.1:${{OPTIFLOW_PREFECT_PORT:-{defaults.prefect_port}}}:4200",
    }
    created = re.findall(r"CREATE DATABASE (\w+);", (REPO / "docker" / "postgres-init.sql").read_text())
    assert tuple(created) == stack.DATABASES
    assert compose["services"]["postgres"]["environment"]["POSTGRES_USER"] == f"${{OPTIFLOW_PG_USER:-{defaults.user}}}"
