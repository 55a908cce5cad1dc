"""Calibrated probabilities end to end: the evaluation fits the temperature on the
validation split and cuts after it; a run's metrics.json, plots and artifacts carry it;
the packaged model ships it and ``cxr evaluate`` applies it (models packaged before it
still evaluate, uncalibrated)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import bentoml
import keras
import numpy as np
import pandas as pd
import pytest

from cxr.core.calibration import calibrate
from cxr.core.config import DecisionConfig
from cxr.core.model_store import (
    INFO_FILE,
    MODEL_FILE,
    load_checkpoint,
    load_model,
    read_serving_info,
    save_model,
)
from cxr.data.dataset import Arrays, load_arrays
from cxr.train.calibration import expected_calibration_error
from cxr.train.evaluation import (
    choose_cutoff,
    compute_metrics,
    evaluate_model,
    evaluate_packaged,
    predict_probabilities,
)
from tests.conftest import last_json, link_dataset, real_images, run_cli

OVERCONFIDENCE = 3.0  # the toy model answers sigmoid(3 z) where sigmoid(z) is the truth


def _toy_model() -> keras.Model:
    """P(COVID) = sigmoid(OVERCONFIDENCE * first input value)."""
    inputs = keras.Input((4, 4, 3))
    dense = keras.layers.Dense(1, activation="sigmoid", name="covid_probability")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    kernel = np.zeros((48, 1), np.float32)
    kernel[0, 0] = OVERCONFIDENCE
    dense.set_weights([kernel, np.zeros(1, np.float32)])
    return model


def _split(n: int, seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.5, (n, 4, 4, 3)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-x[:, 0, 0, 0]))).astype(np.float32)
    return Arrays(x=x, y=y, paths=[f"image-{i}.png" for i in range(n)])


def test_the_temperature_is_fitted_on_validation_and_the_cutoff_chosen_after_it() -> None:
    model, val, test = _toy_model(), _split(3000, 1), _split(1000, 2)
    decision = DecisionConfig(cutoff_from_validation=True)
    result = evaluate_model(model, val, test, decision)
    temperature = result.calibration["temperature"]
    assert temperature == pytest.approx(OVERCONFIDENCE, rel=0.1)
    assert result.calibration["fitted_on"] == "validation"
    raw = predict_probabilities(model, test.x)
    np.testing.assert_allclose(result.raw_probabilities, raw)
    np.testing.assert_allclose(result.probabilities, calibrate(raw, temperature))
    cutoff, _ = choose_cutoff(val.y, calibrate(predict_probabilities(model, val.x), temperature))
    assert result.cutoff["value"] == cutoff and result.metrics["threshold"] == cutoff
    assert result.metrics == compute_metrics(test.y, result.probabilities, cutoff)
    calibration = result.calibration
    assert calibration["test_ece_before"] > 0.08 > calibration["test_ece_after"]
    assert calibration["val_nll_after"] < calibration["val_nll_before"]
    assert calibration["test_ece_after"] == pytest.approx(
        expected_calibration_error(test.y, result.probabilities), abs=1e-6
    )

    off = evaluate_model(model, val, test, DecisionConfig(calibrate=False))
    assert off.calibration["temperature"] == 1.0 and off.calibration["fitted_on"] == "off"
    np.testing.assert_allclose(off.probabilities, raw)
    assert off.calibration["test_ece_before"] == off.calibration["test_ece_after"]


def _repackage(tag: str, name: str, serving: dict) -> str:
    """The packaged model's checkpoint saved again under ``name`` with ``serving``."""
    stored = bentoml.models.get(tag)
    return save_model(name, Path(stored.path_of(MODEL_FILE)), serving, {"run_id": "test"})


@pytest.mark.slow
@pytest.mark.real_data
def test_cxr_evaluate_applies_the_shipped_temperature(packaged_model: str, tmp_path) -> None:
    paths = real_images("COVID", 5, offset=150) + real_images("Normal", 5, offset=150)
    dataset = link_dataset(tmp_path, {"COVID": paths[:5], "Normal": paths[5:]})
    serving = read_serving_info(bentoml.models.get(packaged_model))
    tempered = _repackage(packaged_model, "cxr-test-tempered", {**serving, "temperature": 2.5})
    earlier = {k: v for k, v in serving.items() if k != "temperature"}
    untempered = _repackage(packaged_model, "cxr-test-before-calibration", earlier)
    stored_earlier = json.loads(Path(bentoml.models.get(untempered).path_of(INFO_FILE)).read_text())
    assert "temperature" not in stored_earlier  # packaged as before calibration existed
    assert load_model(tempered).temperature == 2.5 and load_model(untempered).temperature == 1.0

    csv = tmp_path / "tempered.csv"
    result = run_cli("evaluate", "--model", tempered, "--data-dir", str(dataset), "--predictions",
                     str(csv))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    answer = last_json(result.stdout)
    assert answer["calibration"]["temperature"] == 2.5 and answer["calibration"]["ece_bins"] == 10
    evaluated = pd.read_csv(csv)
    packaged = load_model(packaged_model)
    x = load_arrays(evaluated["path"].tolist(), [0] * len(evaluated), packaged.image_size).x
    raw = predict_probabilities(packaged.model, x)
    np.testing.assert_allclose(evaluated["covid_probability"], calibrate(raw, 2.5), atol=1e-6)
    assert not np.allclose(raw, calibrate(raw, 2.5), atol=1e-3)  # the test can tell them apart
    labels = (evaluated["label"] == "COVID").astype(int).to_numpy()
    assert answer["calibration"]["ece_before"] == pytest.approx(
        expected_calibration_error(labels, raw), abs=1e-6
    )

    before = evaluate_packaged(untempered, dataset, None, 42, tmp_path / "untempered.csv")
    assert before["calibration"]["temperature"] == 1.0
    np.testing.assert_allclose(pd.read_csv(tmp_path / "untempered.csv")["covid_probability"],
                               raw, atol=1e-6)  # fmt: skip
    assert before["accuracy"] == answer["accuracy"]  # the 0.5 cut-off is where T changes nothing


def _artifact_keys(flow_run_id: str) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        return {a.key for a in client.read_artifacts(artifact_filter=flt)}


@pytest.mark.slow
@pytest.mark.real_data
def test_a_run_reports_calibration_and_ships_the_temperature(
    prefect_server, small_real_dataset, tmp_path
) -> None:
    runs = tmp_path / "runs"
    args = ["train", "--data-dir", str(small_real_dataset), "--profile", "demo"]
    args += ["--image-size", "32", "--epochs", "1", "--gate-min-score", "0"]
    for setting in (
        "data.min_images_per_class=5",
        "train.models=[lstm]",
        "gate.model=lstm",
        "packaging.build_bento=false",
        "decision.cutoff_from_validation=true",
    ):
        args += ["--set", setting]  # fmt: skip
    args += ["--runs-dir", str(runs), "--run-id", "calibrated"]
    result = run_cli(*args, api_url=prefect_server)
    assert result.returncode == 0, result.stderr[-3000:]
    tag = last_json(result.stdout)["model_tag"]
    run = runs / "calibrated"
    metrics = json.loads((run / "metrics.json").read_text())
    calibration = metrics["models"]["lstm"]["calibration"]
    temperature = calibration["temperature"]
    assert calibration["fitted_on"] == "validation" and calibration["ece_bins"] == 10
    assert 0.05 <= temperature <= 20
    assert calibration["val_nll_after"] <= calibration["val_nll_before"] + 1e-6
    for key in ("val_ece_before", "val_ece_after", "test_ece_before", "test_ece_after"):
        assert 0 <= calibration[key] <= 1, key

    # the test metrics are those of the calibrated probabilities at the chosen cut-off
    predictions = pd.read_csv(run / "predictions" / "lstm_test.csv")
    np.testing.assert_allclose(
        predictions["covid_probability"],
        calibrate(predictions["raw_covid_probability"], temperature),
        atol=1e-9,
    )
    test = metrics["models"]["lstm"]["test"]
    labels, calibrated = predictions["label_index"], predictions["covid_probability"]
    assert test["threshold"] == metrics["models"]["lstm"]["cutoff"]["value"]
    assert test["accuracy"] == pytest.approx(((calibrated >= test["threshold"]) == labels).mean())
    assert calibration["test_ece_after"] == pytest.approx(
        expected_calibration_error(labels, calibrated), abs=1e-6
    )
    assert calibration["test_ece_before"] == pytest.approx(
        expected_calibration_error(labels, predictions["raw_covid_probability"]), abs=1e-6
    )
    png = run / "plots" / "lstm_reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "lstm-reliability" in _artifact_keys(metrics["prefect_flow_run_id"])

    # shipped: serving.json and the model's metadata; a run checkpoint reads metrics.json
    assert read_serving_info(bentoml.models.get(tag))["temperature"] == temperature
    assert load_model(tag).metadata["calibration"]["temperature"] == temperature
    assert load_model(tag).cutoff == test["threshold"]
    assert load_checkpoint(run / "models" / "lstm.keras").temperature == temperature
    earlier = tmp_path / "earlier"  # the same run as written before calibration existed
    shutil.copytree(run, earlier, ignore=shutil.ignore_patterns("data_docs", "plots"))
    del metrics["models"]["lstm"]["calibration"]
    (earlier / "metrics.json").write_text(json.dumps(metrics))
    assert load_checkpoint(earlier / "models" / "lstm.keras").temperature == 1.0

    # cxr evaluate of the packaged model answers what the run measured on its test images
    test_dataset = link_dataset(
        tmp_path / "test-images",
        {
            name: [Path(p) for p, i in zip(predictions["path"], labels, strict=True) if i == index]
            for index, name in enumerate(["Normal", "COVID"])
        },
    )
    evaluated = evaluate_packaged(tag, test_dataset, None, 0, tmp_path / "evaluated.csv")
    assert evaluated["calibration"]["temperature"] == temperature
    assert evaluated["accuracy"] == pytest.approx(test["accuracy"])
    assert evaluated["calibration"]["ece_after"] == pytest.approx(
        calibration["test_ece_after"], abs=1e-5
    )
