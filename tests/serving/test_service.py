"""The real BentoML server in a subprocess, called over loopback with real radiographs."""

from __future__ import annotations

import io
import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr.core.model_store import PackagedModel, load_model
from cxr.core.preprocessing import preprocess_image
from cxr.serve.prediction_log import count_rows, create_log_engine, read_predictions
from cxr.serve.server_process import ServerProcess, start_server
from tests.code.test_preprocessing import bomb_png
from tests.conftest import link_dataset, real_images, run_cli
from tests.serving.log_under_load import check_no_row_lost_then_kill

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


@pytest.mark.real_data
def test_served_predictions_equal_cxr_evaluate(server, packaged_model: str, tmp_path) -> None:
    client, log, _ = server
    before = count_rows(log)["predictions"]
    paths = real_images("COVID", 4, offset=100) + real_images("Normal", 4, offset=100)
    served = {}
    for path in paths:
        answer = _predict(client, path.read_bytes(), path.name)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"covid_probability", "label", "threshold", "model_tag", "request_id",
                             "in_distribution", "ood_score"}  # fmt: skip
        assert body["in_distribution"] is None and body["ood_score"] is None  # no detector
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
    # the service's input is training's: the model applied to preprocess_image's tensor
    packaged = load_model(packaged_model)
    for path in paths[:2]:
        assert abs(_direct(packaged, path.read_bytes()) - served[path.name]) < 1e-5, path.name
    logged = read_predictions(log).iloc[before:]
    assert len(logged) == len(paths)
    np.testing.assert_allclose(logged["covid_probability"], list(served.values()), atol=1e-9)
    assert (logged["width"] == 299).all() and (logged["mode"] == "L").all()
    assert logged["latency_ms"].gt(0).all() and logged["entropy"].gt(0).all()


@pytest.mark.real_data
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


@pytest.mark.real_data
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


@pytest.mark.real_data
def test_concurrent_clients_lose_no_row_and_kill_keeps_committed_rows(server) -> None:
    client, log, running = server
    check_no_row_lost_then_kill(client, str(log.url), running)


def test_cxr_serve_refuses_an_unknown_model() -> None:
    from tests.conftest import run_cli

    result = run_cli("serve", "--model", "cxr-no-such-model:latest")
    assert result.returncode == 2 and "not found in the BentoML store" in result.stderr


def _direct(packaged: PackagedModel, image: bytes) -> float:
    """P(COVID) of the packaged model applied in this process to ``preprocess_image``."""
    x = preprocess_image(image, packaged.image_size)[None]
    return float(np.asarray(packaged.model(x, training=False)).reshape(-1)[0])


def _batch_sizes(client: httpx.Client) -> tuple[float, float, float]:
    """ModelRunner.infer's adaptive batches so far, from the Prometheus histogram
    ``bentoml_service_adaptive_batch_size`` at /metrics: (batches, requests in them,
    batches of one request)."""
    found = {"count": 0.0, "sum": 0.0, "one": 0.0}
    pattern = re.compile(r"^bentoml_service_adaptive_batch_size_(bucket|count|sum)\{(.*)\} (\S+)$")
    for line in client.get("/metrics").text.splitlines():
        match = pattern.match(line)
        if not match or 'method_name="infer"' not in match[2]:
            continue
        if match[1] != "bucket":
            found[match[1]] += float(match[3])
        elif 'le="1.0"' in match[2]:
            found["one"] += float(match[3])
    return found["count"], found["sum"], found["one"]


@pytest.fixture(scope="module")
def hybrid_images() -> list[bytes]:
    """24 real radiographs (12 per class) the service has not been trained on."""
    paths = real_images("COVID", 12, offset=800) + real_images("Normal", 12, offset=800)
    return [path.read_bytes() for path in paths]


def _serve_bento(bento: str, model_tag: str, folder: Path, **settings: str) -> ServerProcess:
    """``bentoml serve <bento>`` (from a folder outside the repository, so nothing of the
    working tree can be imported) with a prediction log in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "CXR_SERVE__MODEL_TAG": model_tag,
        "CXR_SERVE__PREDICTION_LOG_URL": f"sqlite:///{folder / 'predictions.db'}",
        **{f"CXR_SERVE__{key.upper()}": value for key, value in settings.items()},
    }
    return start_server(env, target=bento, cwd=folder, log_file=folder / "serve.log")


@pytest.fixture(scope="module")
def hybrid_server(hybrid_bento: str, packaged_hybrid: str, tmp_path_factory):
    """The built bento serving the gated ResNet50-LSTM, adaptive batching on (default),
    batches of up to 8 (fewer padded sizes for the runner to compile at start)."""
    folder = tmp_path_factory.mktemp("hybrid-serve")
    running = _serve_bento(hybrid_bento, packaged_hybrid, folder, max_batch_size="8")
    client = httpx.Client(base_url=running.url, timeout=120)
    yield client, folder
    client.close()
    running.stop()


@pytest.mark.real_data
def test_the_built_bento_serves_the_gated_hybrid(
    hybrid_server, hybrid_bento: str, packaged_hybrid: str, hybrid_images: list[bytes]
) -> None:
    client, folder = hybrid_server
    bento = bentoml.bentos.get(hybrid_bento)
    assert {str(model.tag) for model in bento.info.all_models} == {packaged_hybrid}
    info = client.post("/info", json={}).json()
    assert info["model_tag"] == packaged_hybrid and info["batching"] is True
    assert info["image_size"] == 64 and info["threshold"] == 0.5
    packaged = load_model(packaged_hybrid)
    assert packaged.metadata["run_id"] == "test" and packaged.cutoff == 0.5
    assert packaged.model.get_layer("resnet50") is not None  # the hybrid, not a baseline
    for image in hybrid_images[:3] + hybrid_images[-3:]:
        answer = _predict(client, image)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_tag"] == packaged_hybrid
        assert abs(body["covid_probability"] - _direct(packaged, image)) < 1e-5
        assert body["label"] == ("COVID" if body["covid_probability"] >= 0.5 else "Normal")
    log = create_log_engine(f"sqlite:///{folder / 'predictions.db'}")
    assert count_rows(log)["predictions"] == 6


@pytest.mark.real_data
def test_adaptive_batching_batches_concurrent_requests_and_changes_no_answer(
    hybrid_server, hybrid_bento: str, packaged_hybrid: str, hybrid_images: list[bytes], tmp_path
) -> None:
    client, _ = hybrid_server
    batches, requests, single = _batch_sizes(client)
    with ThreadPoolExecutor(max_workers=len(hybrid_images)) as pool:
        answers = list(pool.map(lambda image: _predict(client, image), hybrid_images))
    assert [a.status_code for a in answers] == [200] * len(answers)
    batched = [a.json()["covid_probability"] for a in answers]
    after = _batch_sizes(client)
    new_batches, new_requests = after[0] - batches, after[1] - requests
    assert new_requests == len(hybrid_images)  # each request went through one batch
    assert new_batches - (after[2] - single) >= 1, after  # at least one batch of 2 or more
    assert len(hybrid_images) / 8 <= new_batches < len(hybrid_images)

    unbatched_server = _serve_bento(
        hybrid_bento, packaged_hybrid, tmp_path / "unbatched", batching="false", max_batch_size="8"
    )
    try:
        with httpx.Client(base_url=unbatched_server.url, timeout=120) as unbatched:
            assert unbatched.post("/info", json={}).json()["batching"] is False
            alone = [
                _predict(unbatched, image).json()["covid_probability"] for image in hybrid_images
            ]
            assert _batch_sizes(unbatched)[0] == 0  # no adaptive batching at all
    finally:  # a throwaway server: SIGKILL (a SIGTERM'd hybrid server takes ~50 s to stop)
        unbatched_server.stop(signal.SIGKILL)
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)
