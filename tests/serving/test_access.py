"""Access control and the streaming upload limit on the real service (``bentoml serve`` and
``cxr serve`` in subprocesses), and the API token kept out of every dump, log and answer."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import bentoml
import httpx
import psutil
import pytest

from cxr.core.config import REPO_ROOT, load_settings
from cxr.core.model_store import MODEL_FILE
from cxr.serve.server_process import ServerProcess, free_port, start_server
from cxr.train.packaging import build_bento, model_metadata, package
from tests.conftest import real_images

pytestmark = [pytest.mark.slow, pytest.mark.real_data]
TOKEN = "cxr-leak-canary-5d9e27b1f04c4a8e"  # distinctive: any dump that holds it is found
MAX_UPLOAD = 100_000  # the guard cuts a body at this + 64 KiB of form overhead


def _listening(process: subprocess.Popen, port: int) -> set[str]:
    """Addresses the server's process tree listens on at ``port``."""
    tree = psutil.Process(process.pid)
    found = set()
    for member in [tree, *tree.children(recursive=True)]:
        try:
            connections = member.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        found |= {c.laddr.ip for c in connections if c.status == "LISTEN" and c.laddr.port == port}
    return found


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _chunked_upload_over_the_limit(url: str, total: int) -> tuple[bytes, int]:
    """POST /predict with the token and a ``total``-byte multipart body in chunked
    encoding over a raw socket; stop sending as soon as an answer arrives. Returns the
    answer's first bytes and how many body bytes were sent by then."""
    host, port = url.removeprefix("http://").split(":")
    boundary = "cxr-access-boundary"
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    chunk = os.urandom(64 * 1024)
    sent, answer = 0, b""
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        try:
            while sent < total:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
            else:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: the answer should be waiting
        try:
            sock.settimeout(30)
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    return answer, sent


@pytest.fixture(scope="module")
def guarded(packaged_model: str, tmp_path_factory: pytest.TempPathFactory):
    """``bentoml serve`` with an API token, no ``--host``, a small upload limit; its log."""
    folder = tmp_path_factory.mktemp("access")
    log_file = folder / "serve.log"
    running = start_server(
        {
            "CXR_SERVE__MODEL_TAG": packaged_model,
            "CXR_SERVE__PREDICTION_LOG_URL": f"sqlite:///{folder / 'predictions.db'}",
            "CXR_SERVE__MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
            "CXR_SERVE__API_TOKEN": TOKEN,
        },
        log_file=log_file,
        host=None,
    )
    yield running, log_file
    running.stop()


def test_token_guards_predict_and_info_but_not_health_or_metrics(guarded) -> None:
    running, _ = guarded
    image = real_images("COVID", 1, offset=600)[0].read_bytes()
    files = {"image": ("x.png", image, "image/png")}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=running.url, timeout=60) as client:
        for route, kwargs in [("/predict", {"files": files}), ("/info", {"json": {}})]:
            missing = client.post(route, **kwargs)
            assert missing.status_code == 401, missing.text
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert "error" in missing.json()
            wrong = client.post(route, headers={"Authorization": f"Bearer {TOKEN[:-1]}"}, **kwargs)
            assert wrong.status_code == 401
            assert client.post(route, headers=auth, **kwargs).status_code == 200
        explain = client.post("/explain", files=files)  # whether or not the route exists yet
        assert explain.status_code == 401
        assert client.get("/docs.json").status_code == 401  # guarded by default
        for route in ["/livez", "/readyz", "/healthz", "/metrics"]:
            assert client.get(route).status_code == 200, route
        assert "bentoml_service_request_total" in client.get("/metrics").text


def test_with_a_token_and_no_host_it_listens_on_every_interface(guarded) -> None:
    running, _ = guarded
    port = int(running.url.rsplit(":", 1)[1])
    assert _listening(running.process, port) == {"0.0.0.0"}


def test_chunked_upload_over_the_limit_is_cut_and_the_service_keeps_serving(guarded) -> None:
    running, _ = guarded
    total = 64 * 1024 * 1024
    answer, sent = _chunked_upload_over_the_limit(running.url, total)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < total // 4  # refused while streaming, long before the end of the body
    image = real_images("Normal", 1, offset=600)[0].read_bytes()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=running.url, timeout=60, headers=auth) as client:
        ok = client.post("/predict", files={"image": ("x.png", image, "image/png")})
        assert ok.status_code == 200, ok.text
        assert client.get("/readyz").status_code == 200


def test_the_token_never_leaks(guarded, packaged_model: str, tmp_path: Path) -> None:
    running, log_file = guarded
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=running.url, timeout=60, headers=auth) as client:
        answers = [client.post("/info", json={}).text, client.get("/docs.json").text]
        answers.append(client.get("/metrics").text)
    assert all(TOKEN not in answer for answer in answers)
    log = log_file.read_text()
    assert "Starting production HTTP BentoServer" in log and TOKEN not in log

    environ = {"CXR_SERVE__API_TOKEN": TOKEN}
    settings = load_settings("demo", overrides={"packaging.build_bento": False}, environ=environ)
    assert settings.serve.api_token.get_secret_value() == TOKEN  # it is set, and yet:
    dumps = [settings.model_dump_json(), repr(settings), str(settings)]
    dumps.append(json.dumps(settings.model_dump(mode="json")))  # the run's config.json
    assert all(TOKEN not in dump for dump in dumps)

    # a packaged model made the way the training flow packages one
    stored = bentoml.models.get(packaged_model)
    reference = tmp_path / "reference.csv"
    reference.write_bytes(Path(stored.path_of("reference.csv")).read_bytes())
    test = {"accuracy": 0.5, "confusion": [[1, 1], [1, 1]]}
    results = {settings.gate.model: {"test": test, "best_epoch": 1}}
    assert TOKEN not in json.dumps(model_metadata(results, {"run_id": "leak"}, settings))
    tags = package(Path(stored.path_of(MODEL_FILE)), [reference], results, {}, settings)
    folder = Path(bentoml.models.get(tags["model_tag"]).path)
    for path in folder.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_cxr_serve_without_a_token_listens_on_loopback_and_warns(
    packaged_model: str, tmp_path: Path
) -> None:
    port = free_port()
    log_file = tmp_path / "cxr-serve.log"
    env = {
        **os.environ,
        "CXR_SERVE__MODEL_TAG": packaged_model,
        "CXR_SERVE__PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
    }
    with open(log_file, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cxr.cli", "serve", "--port", str(port)],
            cwd=REPO_ROOT, env=env, start_new_session=True, stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    running = ServerProcess(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert process.poll() is None, log_file.read_text()
            try:
                if httpx.get(f"{running.url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(1)
        assert _listening(process, port) == {"127.0.0.1"}
        assert httpx.post(f"{running.url}/info", json={}, timeout=30).status_code == 200
        log = log_file.read_text()
        assert f"on http://127.0.0.1:{port} (open: no CXR_SERVE__API_TOKEN" in log
        assert "no API token is set (CXR_SERVE__API_TOKEN)" in log
        # a SIGTERM to the process `cxr serve` started as (`kill PID`, a supervisor) stops
        # the whole service: no worker is left holding the port
        tree = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert alive == [] and _port_is_free(port), log_file.read_text()[-3000:]
    finally:
        running.stop()


def test_the_built_bento_without_a_token_listens_on_loopback(
    packaged_model: str, tmp_path: Path
) -> None:
    """What a container runs (``bentoml serve <bento>`` with no ``--host``): open, so it
    listens on loopback only and says so; a container must pass a host or a token."""
    bento = build_bento(packaged_model)
    env = {
        "CXR_SERVE__MODEL_TAG": packaged_model,
        "CXR_SERVE__PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
    }
    log_file = tmp_path / "serve.log"
    running = start_server(env, target=bento, cwd=tmp_path, log_file=log_file, host=None)
    try:
        port = int(running.url.rsplit(":", 1)[1])
        assert _listening(running.process, port) == {"127.0.0.1"}
        assert httpx.post(f"{running.url}/info", json={}, timeout=30).status_code == 200
        assert "no API token is set (CXR_SERVE__API_TOKEN)" in log_file.read_text()
    finally:
        running.stop()
