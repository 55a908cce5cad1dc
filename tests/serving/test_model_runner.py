"""The model in a separate runner service (``CXR_SERVE__MODEL_WORKERS`` > 1): the fronts
call ``ModelRunner`` over BentoML's client, and answer as the in-front model does."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest

from cxr.core.calibration import calibrate
from cxr.core.model_store import load_model
from cxr.core.preprocessing import preprocess_image
from cxr.serve.prediction_log import count_rows, create_log_engine
from cxr.serve.server_process import start_server
from tests.conftest import real_images

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def test_two_model_runner_workers_answer_batched_requests_as_the_model(
    packaged_model: str, tmp_path
) -> None:
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    settings = {
        "CXR_SERVE__MODEL_TAG": packaged_model,
        "CXR_SERVE__PREDICTION_LOG_URL": log_url,
        "CXR_SERVE__MODEL_WORKERS": "2",
        "CXR_SERVE__MAX_BATCH_SIZE": "4",
    }
    running = start_server(settings)
    try:
        commands = [
            " ".join(child.cmdline())
            for child in psutil.Process(running.process.pid).children(recursive=True)
        ]
        assert sum("--service-name cxr-model" in c for c in commands) == 2, commands
        images = [p.read_bytes() for p in real_images("Normal", 8, offset=900)]
        with (
            httpx.Client(base_url=running.url, timeout=120) as client,
            ThreadPoolExecutor(max_workers=16) as pool,
        ):
            answers = list(
                pool.map(
                    lambda i: client.post("/predict", files={"image": ("x.png", images[i % 8])}),
                    range(16),
                )
            )
        assert [a.status_code for a in answers] == [200] * 16, answers[0].text
        packaged = load_model(packaged_model)
        x = np.stack([preprocess_image(image, packaged.image_size) for image in images])
        expected = calibrate(
            np.asarray(packaged.model(x, training=False)).reshape(-1), packaged.temperature
        )
        served = [a.json()["covid_probability"] for a in answers]
        np.testing.assert_allclose(served, np.tile(expected, 2), rtol=0, atol=1e-5)
        assert count_rows(create_log_engine(log_url))["predictions"] == 16
    finally:
        running.stop()
