"""Prefect's temporary ("ephemeral") API server, started by a flow run when no PREFECT_API_URL is set, is a child
process that its parent stops at exit. A parent killed with SIGKILL never stops it: each such run would leave one
more server behind. Optiflow marks the servers it starts with its own process id and, before the next flow, stops
every marked server whose starter is gone.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

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
