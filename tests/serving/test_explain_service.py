"""POST /explain on the real BentoML server: a PNG heat map of a real radiograph's answer,
equal to ``cxr explain``'s, and the same 4xx as /predict for a bad upload."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from cxr.serve.prediction_log import count_rows, create_log_engine
from cxr.serve.server_process import start_server
from tests.code.test_preprocessing import bomb_png
from tests.conftest import real_images, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


@pytest.fixture(scope="module")
def server(packaged_model: str, tmp_path_factory: pytest.TempPathFactory):
    """``bentoml serve`` on a free loopback port, serving the packaged test model with
    batches of up to 16 (so the 65 passes of one explanation take 5 runner calls)."""
    log_url = f"sqlite:///{tmp_path_factory.mktemp('explain') / 'predictions.db'}"
    running = start_server(
        {
            "CXR_SERVE__MODEL_TAG": packaged_model,
            "CXR_SERVE__PREDICTION_LOG_URL": log_url,
            "CXR_SERVE__MAX_BATCH_SIZE": "16",
        }
    )
    client = httpx.Client(base_url=running.url, timeout=120)
    yield client, create_log_engine(log_url)
    client.close()
    running.stop()


def _post(client: httpx.Client, route: str, data: bytes, field: str = "image"):
    return client.post(route, files={field: ("x.png", data, "application/octet-stream")})


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_explain_answers_the_heat_map_of_the_predicted_answer(
    server, packaged_model: str, tmp_path
) -> None:
    client, log = server
    path = real_images("Normal", 1, offset=600)[0]
    before = count_rows(log)["predictions"]
    answer = _post(client, "/explain", path.read_bytes())
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(answer.content)) as png:
        assert png.format == "PNG" and png.size == (64, 64) and png.mode == "RGB"
        served = np.asarray(png).astype(int)
    assert count_rows(log)["predictions"] == before  # explanations are not predictions
    predicted = _post(client, "/predict", path.read_bytes()).json()
    probability = float(answer.headers["x-covid-probability"])
    assert abs(probability - predicted["covid_probability"]) < 1e-5
    assert answer.headers["x-label"] == predicted["label"]
    flag = predicted.get("in_distribution")  # the answer's out-of-distribution check
    assert answer.headers["x-in-distribution"] == ("unknown" if flag is None else str(flag).lower())
    assert answer.headers["x-model-tag"] == packaged_model
    share = answer.headers["x-border-heat-share"]
    assert share == "none" or 0 <= float(share) <= 1

    out = tmp_path / "cli.png"
    done = run_cli("explain", str(path), "--model", packaged_model, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    local = json.loads(done.stdout[done.stdout.index("{") :])
    assert abs(local["covid_probability"] - probability) < 1e-5
    assert local["label"] == predicted["label"] and local["in_distribution"] == flag
    with Image.open(out) as png:
        assert np.abs(np.asarray(png).astype(int) - served).mean() < 1  # the same overlay
    assert "/explain" in client.get("/docs.json").json()["paths"]


def test_bad_uploads_get_the_same_4xx_as_predict(server) -> None:
    client, _ = server
    good = real_images("COVID", 1, offset=601)[0].read_bytes()
    bad = {
        "empty": (b"", 400),
        "text": (b"hello, not an image", 400),
        "truncated": (good[: len(good) // 2], 400),
        "bomb": (bomb_png(), 413),
        "tiny": (_png(Image.new("L", (32, 32), 128)), 422),
    }
    for name, (data, status) in bad.items():
        explained, predicted = _post(client, "/explain", data), _post(client, "/predict", data)
        assert explained.status_code == predicted.status_code == status, (name, explained.text)
        assert explained.json()["error"] == predicted.json()["error"]
        assert explained.json()["request_id"]
    assert _post(client, "/explain", good, field="file").status_code == 400  # wrong field
    assert client.post("/explain").status_code == 400  # no body
    assert _post(client, "/explain", good).status_code == 200  # still serving
