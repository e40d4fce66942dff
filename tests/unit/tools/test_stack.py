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


def test_a_service_exiting_while_starting_is_named_and_stopping_kills_a_group_ignoring_sigterm(tmp_path: Path) -> None:
    """`stack up` launches both servers before awaiting either: a launch records the PID (none when one runs), a
    server that exits while starting is a StackError naming it, and `stack down` signals every group at once and
    SIGKILLs one still alive after the timeout, removing the PID files."""
    import sys
    import time

    settings = stack.StackSettings.from_env(tmp_path, {"OPTIFLOW_STACK_DIR": str(tmp_path / "stack")})
    for sub in ("logs", "pids"):
        (settings.folder / sub).mkdir(parents=True)
    ignores_sigterm = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    slow = stack._launch(settings, "slow", [sys.executable, "-c", ignores_sigterm], {})
    broken = stack._launch(settings, "broken", [sys.executable, "-c", "raise SystemExit(3)"], {})
    assert slow is not None and broken is not None and stack._pid(settings, "slow") == slow.pid
    assert stack._launch(settings, "slow", [sys.executable, "-c", "pass"], {}) is None  # already running
    with pytest.raises(stack.StackError, match="broken exited with code 3 while starting"):
        stack._await_healthy(settings, "broken", broken, "http://127.0.0.1:9/health", time.monotonic() + 60)
    stack._stop_services(settings, ("slow", "broken"), timeout=0.5)  # SIGTERM ignored: SIGKILL after the timeout
    assert slow.wait(timeout=10) == -9 and stack._pid(settings, "slow") is None
    assert not list((settings.folder / "pids").iterdir())
