"""A run's temporary Prefect server is its own: when another API already answers on the port it was given (two runs
starting at once), the run starts its server on another port instead of reporting to the other run's API."""

from __future__ import annotations

import http.server
import os
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from prefect.server.api.server import SubprocessASGIServer

from flows import servers


class _HealthyApi(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200, as another run's Prefect server answers /api/health."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_api() -> Iterator[int]:
    """Another process's API on a port: its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HealthyApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_sockets_are_matched_to_the_process_listening() -> None:
    with socket.socket() as listener, socket.socket() as idle:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        idle.bind(("127.0.0.1", 0))
        mine = servers._socket_inodes(os.getpid(), servers.Path("/proc"))
        assert servers._listening_inodes(listener.getsockname()[1], servers.Path("/proc")) & mine
        assert not servers._listening_inodes(idle.getsockname()[1], servers.Path("/proc"))  # bound, not listening


def test_a_port_another_api_answers_on_is_given_up_for_one_of_our_own(
    other_api: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SubprocessASGIServer, "_instances", {})  # no server this test process started before
    ports, free_port = iter([other_api]), servers._free_port
    monkeypatch.setattr(servers, "_free_port", lambda: next(ports, None) or free_port())
    url = servers.start_ephemeral_server()
    try:
        assert url != f"http://127.0.0.1:{other_api}/api"
        server = SubprocessASGIServer()
        assert server.api_url == url and server.server_process.poll() is None
        listening = servers._listening_inodes(server.port, servers.Path("/proc"))
        assert listening & servers._socket_inodes(server.server_process.pid, servers.Path("/proc"))
        assert httpx.get(f"{url}/health", timeout=10).json() is True
    finally:
        SubprocessASGIServer().stop()
