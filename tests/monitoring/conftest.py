"""Fixtures of the monitoring tests: a real Prefect server process and webhook receivers
on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from cxr.serve.server_process import free_port


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``prefect server start`` on a free loopback port with its own database."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
    }
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(port)],
        env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    else:
        pytest.fail("the Prefect server did not start")
    yield url
    os.killpg(server.pid, signal.SIGINT)
    server.wait(timeout=30)


Receiver = tuple[str, list[dict]]


@pytest.fixture
def make_receiver() -> Iterator[Callable[[int], Receiver]]:
    """Start webhook receivers on loopback that answer ``status`` to every POST and
    record each JSON body; returns (url, bodies)."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    servers: list[HTTPServer] = []

    def start(status: int = 200) -> Receiver:
        received: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers["content-length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = HTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/hook", received

    yield start
    for server in servers:
        server.shutdown()


def forget_episode(api_url: str, model_tag: str) -> None:
    """Drop the stored drift episode of ``model_tag``'s model (a fresh start)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.variables import Variable

    from cxr.monitor.episodes import variable_name

    with temporary_settings({PREFECT_API_URL: api_url}):
        Variable.unset(variable_name(model_tag))
