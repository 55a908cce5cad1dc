"""The served out-of-distribution check: a model packaged with its detector, called over
loopback with real radiographs and with images that are no radiographs."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from cxr.core.config import DataConfig
from cxr.core.model_store import get_stored, load_model, read_serving_info, save_model
from cxr.core.ood import DETECTOR_FILE, OUT_OF_DISTRIBUTION
from cxr.data.dataset import load_arrays
from cxr.data.ingestion import ingest
from cxr.monitor.reference import REFERENCE_FILE, build_reference
from cxr.serve.prediction_log import create_log_engine, read_predictions
from cxr.serve.server_process import start_server
from cxr.train.ood import fit_detector, ood_scores
from tests.conftest import link_dataset, real_images, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.real_data]
CLASSES = ["Normal", "COVID"]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def non_radiographs() -> dict[str, bytes]:
    """Uniform noise and a rendered text page (299 px)."""
    noise = np.random.default_rng(0).integers(0, 256, (299, 299), dtype=np.uint8)
    page = Image.new("L", (299, 299), 255)
    draw = ImageDraw.Draw(page)
    for line in range(12):
        draw.text((10, 10 + 22 * line), "report: no chest radiograph here " * 2, fill=0)
    return {"noise.png": _png(noise), "text.png": _png(np.asarray(page))}


def colour_copies(path: Path) -> dict[str, bytes]:
    """A real radiograph tinted sepia (a colour image), and the same film as RGB with
    equal channels and as a colour JPEG (both still grey)."""
    gray = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    tinted = np.stack([gray, gray * 0.8, gray * 0.55], axis=2).astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(gray.astype(np.uint8)).convert("RGB").save(jpeg, format="JPEG", quality=95)
    return {
        "tinted.png": _png(tinted),
        "grey-rgb.png": _png(np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)),
        "grey-rgb.jpg": jpeg.getvalue(),
    }


@pytest.fixture(scope="module")
def ood_model(packaged_hybrid: str, packaging_dataset: Path, tmp_path_factory) -> str:
    """The packaged ResNet50-LSTM test model (the gated architecture), packaged again
    with a detector fitted on its own training images (threshold on 40 other real
    images) and a reference with OOD scores."""
    folder = tmp_path_factory.mktemp("ood-model")
    packaged = load_model(packaged_hybrid)
    images = ingest(packaging_dataset, DataConfig(classes=CLASSES, samples_per_class=None), 0)
    train = load_arrays(images["path"].tolist(), images["label_index"].tolist(), 64)
    val_paths = real_images("COVID", 20, offset=600) + real_images("Normal", 20, offset=600)
    val = load_arrays([str(p) for p in val_paths], [1] * 20 + [0] * 20, 64)
    detector = fit_detector(packaged.model, train.x, val.x, keep_share=0.975)
    detector.save(folder / DETECTOR_FILE)
    scores = ood_scores(packaged.model, detector, train.x)
    predictions = images[["path", "label_index"]].assign(
        covid_probability=packaged.model.predict(train.x, verbose=0).reshape(-1),
        ood_score=scores,
        in_distribution=detector.in_distribution(scores),
    )
    build_reference(images, predictions, CLASSES, 0.5).to_csv(folder / REFERENCE_FILE, index=False)
    stored = get_stored(packaged_hybrid)
    return save_model(
        "cxr-test-ood",
        Path(stored.path_of("model.keras")),
        read_serving_info(stored),
        {"run_id": "test-ood", "synthetic": False},
        extra_files=[folder / REFERENCE_FILE, folder / DETECTOR_FILE],
    )


@pytest.fixture(scope="module")
def ood_server(ood_model: str, tmp_path_factory):
    log_url = f"sqlite:///{tmp_path_factory.mktemp('ood-serve') / 'predictions.db'}"
    running = start_server(
        {
            "CXR_SERVE__MODEL_TAG": ood_model,
            "CXR_SERVE__PREDICTION_LOG_URL": log_url,
            "CXR_SERVE__MAX_BATCH_SIZE": "8",
        }
    )
    client = httpx.Client(base_url=running.url, timeout=60)
    yield client, create_log_engine(log_url)
    client.close()
    running.stop()


def _predict(client: httpx.Client, data: bytes, name: str) -> dict:
    answer = client.post("/predict", files={"image": (name, data, "application/octet-stream")})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_non_radiographs_are_answered_out_of_distribution_and_logged(
    ood_server, ood_model: str, tmp_path
) -> None:
    client, log = ood_server
    info = client.post("/info", json={}).json()
    threshold = info["ood_check"]["threshold"]
    assert info["ood_check"]["keep_share"] == 0.975 and info["ood_check"]["feature_dim"] == 276
    real = real_images("COVID", 3, offset=100) + real_images("Normal", 3, offset=100)
    uploads = {path.name: path.read_bytes() for path in real} | non_radiographs()
    uploads |= colour_copies(real[0])
    served = {name: _predict(client, data, name) for name, data in uploads.items()}
    for name, body in served.items():
        assert {"in_distribution", "ood_score", "covid_probability", "label"} <= set(body)
        within = body["ood_score"] <= threshold
        assert body["in_distribution"] == (within and name != "tinted.png"), name
        verdict = "COVID" if body["covid_probability"] >= 0.5 else "Normal"
        expected = verdict if body["in_distribution"] else OUT_OF_DISTRIBUTION
        assert body["label"] == expected, name
    for name in non_radiographs():  # refused, with its probability still answered
        body = served[name]
        assert body["in_distribution"] is False and body["label"] == OUT_OF_DISTRIBUTION
        assert 0.0 <= body["covid_probability"] <= 1.0
    assert sum(served[path.name]["in_distribution"] for path in real) >= 4  # the population
    # colour makes an image out of distribution whatever its score; grey saved as colour does not
    original = served[real[0].name]
    assert served["tinted.png"]["label"] == OUT_OF_DISTRIBUTION
    for name in ("grey-rgb.png", "grey-rgb.jpg"):
        assert served[name]["in_distribution"] == original["in_distribution"], name
        assert served[name]["label"] == original["label"], name

    logged = read_predictions(log).set_index("request_id")
    for body in served.values():
        row = logged.loc[body["request_id"]]
        assert bool(row["in_distribution"]) == body["in_distribution"]
        assert row["ood_score"] == pytest.approx(body["ood_score"], rel=1e-9)
        assert row["label"] == body["label"]

    # served answers equal `cxr evaluate` for the same files, the OOD check included
    dataset = link_dataset(tmp_path / "data", {"COVID": real[:3], "Normal": real[3:]})
    for name, data in (non_radiographs() | colour_copies(real[0])).items():
        (dataset / "Normal" / "images" / name).write_bytes(data)
    csv = tmp_path / "evaluated.csv"
    result = run_cli(
        "evaluate", "--model", ood_model, "--data-dir", str(dataset), "--predictions", str(csv)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    evaluated = pd.read_csv(csv).assign(name=lambda df: df["path"].map(lambda p: Path(p).name))
    assert len(evaluated) == len(served)
    for row in evaluated.itertuples():
        body = served[row.name]
        assert row.covid_probability == pytest.approx(body["covid_probability"], abs=1e-5)
        assert row.ood_score == pytest.approx(body["ood_score"], rel=1e-4)
        assert bool(row.in_distribution) == body["in_distribution"]
