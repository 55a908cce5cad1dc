"""Models packaged and runs written by earlier versions still load after the renames."""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import pytest

from cxr.core.errors import DataInputError
from cxr.core.model_store import load_checkpoint, read_serving_info, save_model

EARLIER_SERVING = {"architecture": "lstm", "image_size": 64, "classes": ["Normal", "COVID"]}


def _stored(tmp_path: Path, serving: dict) -> bentoml.Model:
    checkpoint = tmp_path / "model.keras"
    checkpoint.write_bytes(b"not read by read_serving_info")
    return bentoml.models.get(save_model("cxr-compat", checkpoint, serving, {"run_id": "x"}))


def test_a_model_packaged_before_the_renames_serves_its_cutoff(tmp_path: Path) -> None:
    old = {**EARLIER_SERVING, "decision_threshold": 0.37, "equalize": False}
    info = read_serving_info(_stored(tmp_path, old))
    assert info["cutoff"] == 0.37 and "decision_threshold" not in info
    new = {**EARLIER_SERVING, "cutoff": 0.42}
    assert read_serving_info(_stored(tmp_path, new))["cutoff"] == 0.42


def test_a_model_trained_on_equalised_images_is_refused(tmp_path: Path) -> None:
    old = {**EARLIER_SERVING, "decision_threshold": 0.5, "equalize": True}
    with pytest.raises(DataInputError, match="histogram-equalised images.*retrain"):
        read_serving_info(_stored(tmp_path, old))


def test_a_checkpoint_of_an_earlier_run_is_refused_clearly_when_equalised(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    (run / "models" / "lstm.keras").write_bytes(b"x")
    config = {"gate": {"decision_threshold": 0.5}, "preprocess": {"image_size": 64}}
    (run / "config.json").write_text(json.dumps({**config, "data": {"classes": ["N", "C"]}}))
    with pytest.raises(DataInputError, match="cannot load checkpoint"):  # read the old names
        load_checkpoint(run / "models" / "lstm.keras")
    config["preprocess"]["equalize"] = True
    (run / "config.json").write_text(json.dumps({**config, "data": {"classes": ["N", "C"]}}))
    with pytest.raises(DataInputError, match="histogram-equalised"):
        load_checkpoint(run / "models" / "lstm.keras")


def test_a_model_packaged_before_calibration_serves_uncalibrated(tmp_path: Path) -> None:
    old = {**EARLIER_SERVING, "cutoff": 0.42}  # no temperature: T = 1 leaves P(COVID) as is
    assert read_serving_info(_stored(tmp_path, old))["temperature"] == 1.0
    new = {**EARLIER_SERVING, "cutoff": 0.42, "temperature": 1.7}
    assert read_serving_info(_stored(tmp_path, new))["temperature"] == 1.7
