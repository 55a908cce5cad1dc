"""A model that ships a temperature is served calibrated: ``covid_probability`` is
sigmoid(logit(p) / T), ``label`` cuts it at the shipped cut-off, ``/info`` says T, and the
answers equal ``cxr evaluate``'s."""

from __future__ import annotations

from pathlib import Path

import bentoml
import httpx
import numpy as np
import pandas as pd
import pytest

from cxr.core.calibration import calibrate
from cxr.core.model_store import MODEL_FILE, load_model, read_serving_info, save_model
from cxr.core.preprocessing import preprocess_image
from cxr.serve.server_process import start_server
from cxr.train.evaluation import evaluate_packaged
from tests.conftest import link_dataset, real_images

pytestmark = [pytest.mark.slow, pytest.mark.real_data]
TEMPERATURE, CUTOFF = 2.5, 0.52


def test_served_probabilities_are_calibrated_and_equal_cxr_evaluate(
    packaged_model: str, tmp_path: Path
) -> None:
    stored = bentoml.models.get(packaged_model)
    serving = {**read_serving_info(stored), "temperature": TEMPERATURE, "cutoff": CUTOFF}
    tag = save_model("cxr-test-calibrated", Path(stored.path_of(MODEL_FILE)), serving, {})
    paths = real_images("COVID", 3, offset=120) + real_images("Normal", 3, offset=120)
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    running = start_server({"CXR_SERVE__MODEL_TAG": tag, "CXR_SERVE__PREDICTION_LOG_URL": log_url})
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            info = client.post("/info", json={}).json()
            answers = {}
            for path in paths:
                files = {"image": (path.name, path.read_bytes(), "application/octet-stream")}
                answer = client.post("/predict", files=files)
                assert answer.status_code == 200, answer.text
                answers[path.name] = answer.json()
    finally:
        running.stop()
    assert info["temperature"] == TEMPERATURE and info["threshold"] == CUTOFF

    packaged = load_model(tag)
    evaluated_csv = tmp_path / "evaluated.csv"
    dataset = link_dataset(tmp_path / "data", {"COVID": paths[:3], "Normal": paths[3:]})
    evaluate_packaged(tag, dataset, None, 42, evaluated_csv)
    evaluated = pd.read_csv(evaluated_csv).set_index(
        pd.read_csv(evaluated_csv)["path"].map(lambda p: Path(p).name)
    )
    for path in paths:
        body = answers[path.name]
        x = preprocess_image(path.read_bytes(), packaged.image_size)[None]
        raw = float(np.asarray(packaged.model(x, training=False)).reshape(-1)[0])
        assert body["covid_probability"] == pytest.approx(float(calibrate(raw, TEMPERATURE)),
                                                          abs=1e-5)  # fmt: skip
        assert abs(body["covid_probability"] - raw) > 1e-4  # the temperature made a difference
        assert body["label"] == ("COVID" if body["covid_probability"] >= CUTOFF else "Normal")
        local = evaluated.loc[path.name, "covid_probability"]
        assert body["covid_probability"] == pytest.approx(local, abs=1e-5)
