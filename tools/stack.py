"""The scale-out stack on one machine: PostgreSQL (Debian packages) with databases for MLflow, Optuna and Prefect,
an MLflow tracking server and a Prefect server on it, all on 127.0.0.1. `optiflow stack up|down|status`.

Credentials come from the environment only (OPTIFLOW_PG_USER / OPTIFLOW_PG_PASSWORD; the defaults suit a
throwaway local cluster). Every URL this module hands out or logs carries no password: clients and servers read
it from PGPASSWORD (libpq, psycopg2 and asyncpg all do), so it never lands in a command line, a log, a flow
parameter or a tracking tag. docker-compose.yml runs the same services under the same names, ports and variables.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from optiflow.errors import OptiflowError

log = logging.getLogger(__name__)

DATABASES = ("mlflow", "optuna", "prefect")
SERVICES = ("postgres", "mlflow", "prefect")
HOST = "127.0.0.1"


class StackError(OptiflowError):
    """A stack service could not be started, reached or stopped."""


@dataclass(frozen=True)
class StackSettings:
    """Where the stack keeps its state and how to reach it; read from the environment (see `from_env`)."""

    folder: Path  # logs, pids, MLflow artifacts, Prefect home, stack.env
    pg_data: Path
    pg_bin: Path
    pg_port: int
    user: str
    password: str
    mlflow_port: int
    prefect_port: int
    os_user: str | None  # the account PostgreSQL runs as when we are root (it refuses to run as root)

    @classmethod
    def from_env(cls, root: Path, environ: dict[str, str] | None = None) -> StackSettings:
        env = dict(os.environ if environ is None else environ)
        folder = Path(env.get("OPTIFLOW_STACK_DIR", root / ".stack")).resolve()
        os_user = env.get("OPTIFLOW_PG_OS_USER", "postgres") if os.geteuid() == 0 else None
        if "OPTIFLOW_PG_DATA" in env:
            pg_data = Path(env["OPTIFLOW_PG_DATA"]).resolve()
        elif os_user:
            # The postgres account must reach its data folder; a checkout under /root or a 0700 temp dir is closed
            # to it, so as root the cluster lives in the system temp dir, named after the stack folder.
            digest = hashlib.sha256(str(folder).encode()).hexdigest()[:10]
            pg_data = Path(tempfile.gettempdir()) / f"optiflow-postgres-{digest}"
        else:
            pg_data = folder / "postgres"
        return cls(
            folder=folder,
            pg_data=pg_data,
            pg_bin=Path(env["OPTIFLOW_PG_BIN"]) if "OPTIFLOW_PG_BIN" in env else postgres_bin(),
            pg_port=int(env.get("OPTIFLOW_PG_PORT", "55432")),
            user=env.get("OPTIFLOW_PG_USER", "optiflow"),
            password=env.get("OPTIFLOW_PG_PASSWORD", "optiflow"),
            mlflow_port=int(env.get("OPTIFLOW_MLFLOW_PORT", "5000")),
            prefect_port=int(env.get("OPTIFLOW_PREFECT_PORT", "4200")),
            os_user=os_user,
        )

    def database_url(self, name: str, driver: str = "postgresql+psycopg2") -> str:
        """A password-free SQLAlchemy URL (the password comes from PGPASSWORD). The driver is explicit: SQLAlchemy
        2.1 maps a bare postgresql:// to psycopg 3, which is not installed (psycopg2-binary is)."""
        return f"{driver}://{self.user}@{HOST}:{self.pg_port}/{name}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}/api"

    @property
    def env_file(self) -> Path:
        return self.folder / "stack.env"

    def exports(self) -> dict[str, str]:
        """What a client exports to use the stack (written to stack.env)."""
        return {
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "PREFECT_API_URL": self.prefect_api_url,
            "OPTIFLOW_TUNE_STORAGE": self.database_url("optuna", "postgresql+psycopg2"),
            "PGPASSWORD": self.password,
        }


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL server binaries (/usr/lib/postgresql/<version>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise StackError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
            "apt-get install -y postgresql (or set OPTIFLOW_PG_BIN)"
        )
    return found[-1].parent


def up(settings: StackSettings, timeout: float = 120.0) -> dict[str, str]:
    """Start whatever is not running yet (idempotent) and write stack.env; returns the exports."""
    settings.folder.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "pids", "mlartifacts", "prefect"):
        (settings.folder / sub).mkdir(exist_ok=True)
    start_postgres(settings, timeout)
    create_databases(settings)
    client_env = {**os.environ, "PGPASSWORD": settings.password}
    bin_dir = Path(sys.executable).parent
    services = {
        "mlflow": (
            [
                str(bin_dir / "mlflow"),
                "server",
                "--backend-store-uri",
                settings.database_url("mlflow", "postgresql+psycopg2"),
                "--artifacts-destination",
                str(settings.folder / "mlartifacts"),
                "--host",
                HOST,
                "--port",
                str(settings.mlflow_port),
                "--workers",
                "2",
            ],
            {**client_env, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
            f"{settings.mlflow_url}/health",
        ),
        "prefect": (
            [str(bin_dir / "prefect"), "server", "start", "--host", HOST, "--port", str(settings.prefect_port)],
            {
                **client_env,
                "PREFECT_API_DATABASE_CONNECTION_URL": settings.database_url("prefect", "postgresql+asyncpg"),
                "PREFECT_HOME": str(settings.folder / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_API_URL": settings.prefect_api_url,
            },
            f"{settings.prefect_api_url}/health",
        ),
    }
    # Both servers start at once (each spends seconds importing), then each is awaited until healthy.
    started = {name: _launch(settings, name, command, env) for name, (command, env, _) in services.items()}
    launched = {name: process for name, process in started.items() if process is not None}
    deadline = time.monotonic() + timeout
    try:
        for name, process in launched.items():
            _await_healthy(settings, name, process, services[name][2], deadline)
    except StackError:
        _stop_services(settings, tuple(launched), 10)  # what this call started goes with the failure
        raise
    exports = settings.exports()
    lines = ["# Written by `optiflow stack up`. Use it with: source " + str(settings.env_file)]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in exports.items()]
    settings.env_file.write_text("\n".join(lines) + "\n")
    settings.env_file.chmod(0o600)  # it holds PGPASSWORD
    return exports


def down(settings: StackSettings, timeout: float = 60.0) -> None:
    """Stop the servers (their whole process groups), then PostgreSQL (fast shutdown); data is kept."""
    _stop_services(settings, ("prefect", "mlflow"), timeout)
    if _postgres_running(settings):
        _run_pg(settings, [str(settings.pg_bin / "pg_ctl"), "-D", str(settings.pg_data), "-m", "fast", "-w", "stop"])
        log.info("postgres stopped")


def status(settings: StackSettings) -> list[dict[str, str]]:
    """One row per service: running or stopped, and where it listens (no passwords)."""
    rows = [
        {
            "service": "postgres",
            "state": "running" if _postgres_running(settings) else "stopped",
            "address": f"{HOST}:{settings.pg_port} ({', '.join(DATABASES)})",
        }
    ]
    for name, address in (("mlflow", settings.mlflow_url), ("prefect", settings.prefect_api_url)):
        rows.append({"service": name, "state": "running" if _pid(settings, name) else "stopped", "address": address})
    return rows


def start_postgres(settings: StackSettings, timeout: float = 120.0) -> None:
    """initdb on first use (password auth over TCP, no Unix socket), then pg_ctl start on 127.0.0.1:pg_port."""
    if not (settings.pg_data / "PG_VERSION").is_file():
        _init_cluster(settings)
    (settings.pg_data / "optiflow.conf").write_text(
        f"listen_addresses = '{HOST}'\nport = {settings.pg_port}\nunix_socket_directories = ''\nmax_connections = 200\n"
    )
    if _postgres_running(settings):
        return
    _run_pg(
        settings,
        [
            str(settings.pg_bin / "pg_ctl"),
            "-D",
            str(settings.pg_data),
            "-l",
            str(settings.pg_data / "server.log"),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ],
    )
    log.info("postgres listening on %s:%d (data %s)", HOST, settings.pg_port, settings.pg_data)


def create_databases(settings: StackSettings, names: tuple[str, ...] = DATABASES) -> None:
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(
        host=HOST, port=settings.pg_port, user=settings.user, password=settings.password, dbname="postgres"
    )
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for name in names:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    log.info("created database %s", name)
    finally:
        connection.close()


def _init_cluster(settings: StackSettings) -> None:
    settings.pg_data.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner = pwd.getpwnam(settings.os_user) if settings.os_user else None
    if owner:
        os.chown(settings.pg_data, owner.pw_uid, owner.pw_gid)
    with tempfile.NamedTemporaryFile("w", prefix="optiflow-pw-", delete=False) as handle:
        handle.write(settings.password + "\n")
    password_file = Path(handle.name)
    try:
        if owner:
            os.chown(password_file, owner.pw_uid, owner.pw_gid)
        _run_pg(
            settings,
            [
                str(settings.pg_bin / "initdb"),
                "-D",
                str(settings.pg_data),
                "-U",
                settings.user,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ],
        )
    finally:
        password_file.unlink(missing_ok=True)
    with (settings.pg_data / "postgresql.conf").open("a") as conf:
        conf.write("\ninclude_if_exists = 'optiflow.conf'\n")
    log.info("initialised a PostgreSQL cluster in %s (superuser %s)", settings.pg_data, settings.user)


def _as_owner(settings: StackSettings) -> dict[str, int | str]:
    """subprocess arguments that run a PostgreSQL tool as the cluster's owner (postgres refuses to run as root)."""
    if not settings.os_user:
        return {}
    return {"user": settings.os_user, "group": pwd.getpwnam(settings.os_user).pw_gid}


def _run_pg(settings: StackSettings, command: list[str]) -> None:
    """A PostgreSQL tool as the cluster's owner; its output goes into the error on failure."""
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd="/", **_as_owner(settings))
    if done.returncode != 0:
        raise StackError(f"{Path(command[0]).name} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")


def _postgres_running(settings: StackSettings) -> bool:
    if not (settings.pg_data / "PG_VERSION").is_file():
        return False
    command = [str(settings.pg_bin / "pg_ctl"), "-D", str(settings.pg_data), "status"]
    return subprocess.run(command, capture_output=True, check=False, cwd="/", **_as_owner(settings)).returncode == 0


def _pid_file(settings: StackSettings, name: str) -> Path:
    return settings.folder / "pids" / f"{name}.pid"


def _log_file(settings: StackSettings, name: str) -> Path:
    return settings.folder / "logs" / f"{name}.log"


def _pid(settings: StackSettings, name: str) -> int | None:
    """The recorded PID of a service if that process is still alive."""
    path = _pid_file(settings, name)
    if not path.is_file():
        return None
    pid = int(path.read_text().strip())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    return pid


def _launch(settings: StackSettings, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen | None:
    """Start the service in its own process group (logs in logs/NAME.log); None when it already runs."""
    if _pid(settings, name):
        log.info("%s already running", name)
        return None
    log_path = _log_file(settings, name)
    with log_path.open("ab") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, cwd=settings.folder
        )
    _pid_file(settings, name).write_text(str(process.pid))
    return process


def _await_healthy(
    settings: StackSettings, name: str, process: subprocess.Popen, health_url: str, deadline: float
) -> None:
    """Poll the health URL until it answers 200; a service that exits or misses the deadline is a StackError."""
    log_path = _log_file(settings, name)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _pid_file(settings, name).unlink(missing_ok=True)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise StackError(f"{name} exited with code {process.returncode} while starting; {log_path}:\n{tail}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(health_url, timeout=5) as response,
        ):
            if response.status == 200:
                log.info("%s healthy at %s (log %s)", name, health_url, log_path)
                return
        time.sleep(0.25)
    raise StackError(f"{name} did not answer {health_url} before the start timeout; see {log_path}")


def _stop_services(settings: StackSettings, names: tuple[str, ...], timeout: float) -> None:
    """SIGTERM to each service's process group (servers fork workers), all at once; SIGKILL to any group that
    lingers past `timeout`."""
    groups = {name: pid for name in names if (pid := _pid(settings, name)) is not None}
    for pid in groups.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_group_alive(pid) for pid in groups.values()):
        time.sleep(0.1)
    for name, pid in groups.items():
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        _pid_file(settings, name).unlink(missing_ok=True)
        log.info("%s stopped", name)


def _group_alive(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)  # reap our own child, or it lingers as a zombie that still "exists"
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
