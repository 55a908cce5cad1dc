"""A small real-data training run fits each model's OOD detector and ships the gated
one's with the model; the packaged model refuses a noise image."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr.core.inference import Predictor
from cxr.core.model_store import get_stored, load_any, load_model
from cxr.core.ood import DETECTOR_FILE
from cxr.core.preprocessing import preprocess_image
from cxr.monitor.reference import REFERENCE_FILE
from tests.conftest import last_json, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.real_data]
FAST = ["--profile", "demo", "--image-size", "32", "--epochs", "1", "--gate-min-score", "0"]
FAST += ["--set", "data.min_images_per_class=5", "--set", "train.fine_tune_epochs=1"]
FAST += ["--set", "packaging.build_bento=false"]


def _noise_png() -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (299, 299), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")
    return buffer.getvalue()


def test_run_fits_ships_and_applies_the_detector(prefect_server, small_real_dataset, tmp_path):
    runs = tmp_path / "runs"
    args = ["train", "--data-dir", str(small_real_dataset), *FAST, "--runs-dir", str(runs)]
    result = run_cli(*args, "--run-id", "ood", api_url=prefect_server)
    assert result.returncode == 0, result.stderr[-3000:]
    tag = last_json(result.stdout)["model_tag"]
    run = runs / "ood"

    metrics = json.loads((run / "metrics.json").read_text())
    for name, model in metrics["models"].items():
        ood = model["ood"]
        assert ood["keep_share"] == 0.975 and ood["val_kept_share"] >= 0.975
        assert (run / "ood" / name / DETECTOR_FILE).is_file()
        test = ood["test"]
        assert test["n"] == model["test"]["n"] == 6 and 0 <= test["refused"] <= 6
        assert test["refused_share"] == test["refused"] / 6
    assert metrics["models"]["resnet50_lstm"]["ood"]["feature_dim"] == 256 + 20  # + input stats
    assert "Out-of-distribution check" in (run / "comparison.md").read_text()

    stored = get_stored(tag)
    assert Path(stored.path_of(DETECTOR_FILE)).is_file()
    reference = pd.read_csv(stored.path_of(REFERENCE_FILE))
    assert reference["ood_score"].notna().all() and len(reference) in (6, 12)  # test (+ val)
    assert (run / "predictions" / "resnet50_lstm_val_ood.csv").is_file()
    packaged = load_model(tag)
    assert packaged.detector.threshold == metrics["models"]["resnet50_lstm"]["ood"]["threshold"]
    # the run's checkpoint finds the same detector in the run folder
    checkpoint = load_any(str(run / "models" / "resnet50_lstm.keras"))
    for ours, shipped in zip(
        checkpoint.detector.components, packaged.detector.components, strict=True
    ):
        np.testing.assert_array_equal(ours.centres, shipped.centres)

    predictor = Predictor(packaged.model, 4, packaged.detector.layers)
    x = preprocess_image(_noise_png(), packaged.image_size)[None]
    probability, features = predictor.outputs(x)
    assert 0 <= probability[0] <= 1
    score = packaged.detector.score(features)
    assert not packaged.detector.in_distribution(score)[0], (score, packaged.detector.threshold)
