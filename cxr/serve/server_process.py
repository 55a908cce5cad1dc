"""Start and stop ``bentoml serve`` as a subprocess (tests, benchmarks, monitoring demos)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from cxr.core.config import REPO_ROOT


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A running service and its base URL."""

    process: subprocess.Popen
    url: str

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 10) -> None:
        """Signal the server's process group and every descendant (BentoML starts its
        workers in sessions of their own, so a signal to the group alone orphans them);
        whatever is still alive after ``grace_s`` is killed. A front that probed the model
        runner's readiness while the runner was still loading keeps that probe open for
        the runner's 60 s timeout before it exits on SIGTERM (BentoML 1.4), hence the kill."""
        if self.process.poll() is not None:
            return
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        os.killpg(self.process.pid, sig)
        for child in descendants:
            try:
                child.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs([psutil.Process(self.process.pid), *descendants], grace_s)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait(timeout=30)


def start_server(
    settings_env: dict[str, str],
    timeout_s: float = 180,
    log_file: Path | None = None,
    target: str = "service:XRayClassifier",
    cwd: Path = REPO_ROOT,
    host: str | None = "127.0.0.1",
) -> ServerProcess:
    """``bentoml serve <target>`` (the repository's service, or a bento tag) with extra
    ``CXR_SERVE__*`` settings; output to ``log_file`` if given; returns once ``/readyz``
    answers 200. ``host=None`` passes no ``--host``: the service's own default decides
    (loopback without an API token, every interface with one)."""
    port = free_port()
    env = {**os.environ, **settings_env}
    command = [sys.executable, "-m", "bentoml", "serve", target, "--port", str(port)]
    command += [] if host is None else ["--host", host]
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        process = subprocess.Popen(
            command,
            cwd=cwd, env=env, start_new_session=True, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    finally:
        if log_file:
            output.close()  # the child keeps its own descriptor
    server = ServerProcess(process, f"http://127.0.0.1:{port}")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {process.returncode} during start-up")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(1)
    server.stop()
    raise TimeoutError(f"the service was not ready within {timeout_s} s")
