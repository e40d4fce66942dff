"""Prefect's temporary ("ephemeral") API server, started by a flow run when no PREFECT_API_URL is set, is a child
process that its parent stops at exit. A parent killed with SIGKILL never stops it: each such run would leave one
more server behind. Optiflow marks the servers it starts with its own process id and, before the next flow, stops
every marked server whose starter is gone.

Optiflow also starts that server itself, on a port the kernel chose, and checks that the API answering there is its
own child's. Prefect picks a random port in 8000-8999 and trusts whatever answers on it. Two runs starting at once
can pick the same port; the loser's server then fails to bind, and the loser talks to the winner's API until the winner
exits, after which every call fails.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from optiflow.errors import ServiceUnavailable

log = logging.getLogger("optiflow")

OWNER_VARIABLE = "OPTIFLOW_EPHEMERAL_OWNER"  # inherited by the server Prefect starts: the pid that started it
SERVER_MARKERS = (b"prefect.server.api.server:create_app", b"PREFECT__SERVER_EPHEMERAL=1")


def mark_ephemeral_servers() -> None:
    """Mark any server a flow of this process starts (Prefect passes the environment on)."""
    os.environ[OWNER_VARIABLE] = str(os.getpid())


def ephemeral_servers(proc: Path = Path("/proc")) -> dict[int, int | None]:
    """Every running ephemeral server Optiflow started, by pid, with the pid that started it (Linux; none
    elsewhere)."""
    servers: dict[int, int | None] = {}
    for entry in proc.glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes()
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        owner = next((v.split(b"=", 1)[1] for v in environment if v.startswith(OWNER_VARIABLE.encode() + b"=")), None)
        if owner is not None and SERVER_MARKERS[0] in command and SERVER_MARKERS[1] in environment:
            servers[int(entry.name)] = int(owner) if owner.isdigit() else None
    return servers


def orphaned_servers(proc: Path = Path("/proc")) -> list[int]:
    """Ephemeral servers Optiflow started whose starter no longer runs."""
    return sorted(pid for pid, owner in ephemeral_servers(proc).items() if owner is None or not _alive(owner, proc))


def stop_orphaned_servers(proc: Path = Path("/proc")) -> list[int]:
    """Stop (SIGTERM) every orphaned ephemeral server; returns their pids."""
    stopped = []
    for pid in orphaned_servers(proc):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            continue
        stopped.append(pid)
    if stopped:
        log.info("stopped %d Prefect server(s) left behind by a killed run: pid %s", len(stopped), stopped)
    return stopped


def _alive(pid: int, proc: Path) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def start_ephemeral_server(attempts: int = 5, proc: Path = Path("/proc")) -> str:
    """Start this process's temporary Prefect API (the instance Prefect's client then reuses) and return its URL,
    once this process's own child listens on its port."""
    from prefect.server.api.server import SubprocessASGIServer

    for _ in range(attempts):
        server = SubprocessASGIServer()  # stop() drops the instance: the next call makes a new one
        if not server.running:
            server.port = _free_port()
            server.start()
        if _serves(server.server_process, server.port, proc):
            return server.api_url
        log.info("another process's Prefect server answered on port %d; starting ours on another port", server.port)
        server.stop()
    raise ServiceUnavailable(f"could not start a temporary Prefect server of this run's own in {attempts} attempts")


def _free_port() -> int:
    """A port nothing listens on now, from the kernel's ephemeral range (28,000 ports, not Prefect's 1,000)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serves(process: subprocess.Popen, port: int, proc: Path, timeout: float = 60.0) -> bool:
    """Whether ``process`` holds the listening socket on ``port``: True once it does, False once it exits
    (it could not bind: another server had the port). Without /proc, as Prefect does, the answer is trusted."""
    if not (proc / "net" / "tcp").is_file():
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if _listening_inodes(port, proc) & _socket_inodes(process.pid, proc):
            return True
        time.sleep(0.05)
    return False


def _listening_inodes(port: int, proc: Path) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` (IPv4 and IPv6)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int, proc: Path) -> set[str]:
    """Inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    try:
        descriptors = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for descriptor in descriptors:
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes
