"""The real BentoML server in a subprocess, called over loopback with real radiographs."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr.serve.prediction_log import count_rows, create_log_engine, read_predictions
from cxr.serve.server_process import start_server
from tests.code.test_preprocessing import bomb_png
from tests.conftest import link_dataset, real_images, run_cli

pytestmark = pytest.mark.slow
MAX_UPLOAD = 3_000_000


@pytest.fixture(scope="module")
def server(packaged_model: str, tmp_path_factory: pytest.TempPathFactory):
    """``bentoml serve`` on a free loopback port, serving the packaged test model."""
    log_url = f"sqlite:///{tmp_path_factory.mktemp('serve') / 'predictions.db'}"
    running = start_server(
        {
            "CXR_SERVE__MODEL_TAG": packaged_model,
            "CXR_SERVE__PREDICTION_LOG_URL": log_url,
            "CXR_SERVE__MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        }
    )
    client = httpx.Client(base_url=running.url, timeout=60)
    yield client, create_log_engine(log_url), running
    client.close()
    running.stop()


def _predict(client: httpx.Client, data: bytes, name: str = "x.png", field: str = "image"):
    return client.post("/predict", files={field: (name, data, "application/octet-stream")})


def _chunked_upload(client: httpx.Client, data: bytes) -> httpx.Response:
    """A multipart upload sent with chunked transfer encoding (no Content-Length)."""
    boundary = "cxr-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    return client.post("/predict", content=chunks, headers=headers)


def _encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_served_predictions_equal_cxr_evaluate(server, packaged_model: str, tmp_path) -> None:
    client, log, _ = server
    before = count_rows(log)["predictions"]
    paths = real_images("COVID", 4, offset=100) + real_images("Normal", 4, offset=100)
    served = {}
    for path in paths:
        answer = _predict(client, path.read_bytes(), path.name)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"covid_probability", "label", "threshold", "model_tag", "request_id"}
        assert body["model_tag"] == packaged_model and body["threshold"] == 0.5
        assert body["label"] == ("COVID" if body["covid_probability"] >= 0.5 else "Normal")
        served[path.name] = body["covid_probability"]
    dataset = link_dataset(tmp_path, {"COVID": paths[:4], "Normal": paths[4:]})
    csv = tmp_path / "evaluated.csv"
    result = run_cli(
        "evaluate", "--model", packaged_model, "--data-dir", str(dataset), "--predictions", str(csv)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    evaluated = pd.read_csv(csv)
    evaluated["name"] = evaluated["path"].map(lambda p: Path(p).name)
    for name, probability in served.items():
        local = evaluated.loc[evaluated["name"] == name, "covid_probability"].item()
        assert abs(local - probability) < 1e-5, name
    # the model was trained on equalised input: the service and evaluate must equalise too
    from cxr.core.model_store import load_model
    from cxr.core.preprocessing import preprocess_image

    packaged = load_model(packaged_model)
    assert packaged.equalize and client.post("/info", json={}).json()["equalize"] is True
    for path in paths[:2]:
        equalised = preprocess_image(path.read_bytes(), 64, equalize=True)[None]
        direct = float(np.asarray(packaged.model(equalised, training=False)).reshape(-1)[0])
        assert abs(direct - served[path.name]) < 1e-5, path.name
    logged = read_predictions(log).iloc[before:]
    assert len(logged) == len(paths)
    np.testing.assert_allclose(logged["covid_probability"], list(served.values()), atol=1e-9)
    assert (logged["width"] == 299).all() and (logged["mode"] == "L").all()
    assert logged["latency_ms"].gt(0).all() and logged["entropy"].gt(0).all()


def test_real_export_formats_are_accepted(server) -> None:
    client, _, _ = server
    path = real_images("Normal", 1, offset=200)[0]
    gray = Image.open(path)
    rgb = gray.convert("RGB")
    original = _predict(client, path.read_bytes()).json()["covid_probability"]
    twelve_bit = np.rint(np.asarray(gray) * (4095 / 255)).astype(np.uint16)
    variants = {  # name: (bytes, how far the answer may move from the 8-bit original's)
        "rgb.png": (_encode(rgb), 1e-6),
        "rgba.png": (_encode(rgb.convert("RGBA")), 1e-6),
        "palette.png": (_encode(gray.convert("P")), 1e-6),
        "16bit.png": (_encode(Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)), 1e-6),
        "12bit-in-16.png": (_encode(Image.fromarray(twelve_bit)), 0.02),
        "big.jpg": (_encode(gray.resize((1024, 1024)), "JPEG"), 0.05),
    }
    for name, (data, tolerance) in variants.items():
        answer = _predict(client, data, name)
        assert answer.status_code == 200, (name, answer.text)
        assert abs(answer.json()["covid_probability"] - original) <= tolerance, name


def test_bad_inputs_get_4xx_and_the_service_keeps_serving(server) -> None:
    client, log, _ = server
    before = count_rows(log)
    good = real_images("COVID", 1, offset=300)[0].read_bytes()
    handled = {
        "empty": (b"", 400),
        "text": (b"hello, not an image", 400),
        "truncated": (good[: len(good) // 2], 400),
        "bomb": (bomb_png(), 413),
        "tiny": (_encode(Image.new("L", (32, 32), 128)), 422),
    }
    for name, (data, status) in handled.items():
        answer = _predict(client, data, f"{name}.png")
        assert answer.status_code == status, (name, answer.text)
        assert answer.json()["error"] and answer.json()["request_id"]
    over_limit = _predict(client, os.urandom(MAX_UPLOAD + 100_000))
    assert over_limit.status_code == 413  # refused from the Content-Length header
    chunked = _chunked_upload(client, os.urandom(MAX_UPLOAD + 1000))
    assert chunked.status_code == 413, chunked.text  # no header: the service's own check
    assert _predict(client, good, field="file").status_code == 400  # wrong field name
    assert client.post("/predict").status_code == 400  # no body
    assert client.get("/livez").status_code == 200 and client.get("/readyz").status_code == 200
    assert "/predict" in client.get("/docs.json").json()["paths"]
    info = client.post("/info", json={}).json()
    assert info["trained_on_synthetic_demo_data"] is False
    assert info["max_upload_bytes"] == MAX_UPLOAD
    assert _predict(client, good).status_code == 200
    after = count_rows(log)
    assert after["rejections"] - before["rejections"] == len(handled) + 1  # + the chunked one
    assert after["predictions"] - before["predictions"] == 1


def test_concurrent_clients_lose_no_row_and_kill_keeps_committed_rows(server) -> None:
    client, log, running = server
    before = count_rows(log)["predictions"]
    images = [p.read_bytes() for p in real_images("COVID", 8, offset=400)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(lambda i: _predict(client, images[i % 8]).status_code, range(64)))
    assert codes == [200] * 64
    assert count_rows(log)["predictions"] - before == 64

    # Kill -9 in the middle of a load: every answered request has its row; at most the
    # requests in flight (committed, answer not yet sent) add rows beyond them.
    before = count_rows(log)["predictions"]
    answered, stop = [], threading.Event()

    def load(i: int) -> None:
        while not stop.is_set():
            try:
                if _predict(client, images[i % 8]).status_code == 200:
                    answered.append(1)
            except httpx.HTTPError:
                return

    threads = [threading.Thread(target=load, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    running.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    logged = count_rows(create_log_engine(str(log.url)))["predictions"] - before
    assert len(answered) > 0 and len(answered) <= logged <= len(answered) + 16


def test_cxr_serve_refuses_an_unknown_model() -> None:
    from tests.conftest import run_cli

    result = run_cli("serve", "--model", "cxr-no-such-model:latest")
    assert result.returncode == 2 and "not found in the BentoML store" in result.stderr


def test_the_built_bento_serves_the_same_model(packaged_model: str, tmp_path: Path) -> None:
    from cxr.train.packaging import build_bento

    bento_tag = build_bento(packaged_model)
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    running = start_server(
        {"CXR_SERVE__MODEL_TAG": packaged_model, "CXR_SERVE__PREDICTION_LOG_URL": log_url},
        target=bento_tag,
        cwd=tmp_path,
    )
    try:
        image = real_images("Normal", 1, offset=500)[0].read_bytes()
        answer = httpx.post(f"{running.url}/predict", files={"image": ("a.png", image)}, timeout=60)
        assert answer.status_code == 200 and answer.json()["model_tag"] == packaged_model
    finally:
        running.stop()
    assert count_rows(create_log_engine(log_url))["predictions"] == 1
