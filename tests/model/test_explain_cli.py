"""``cxr explain`` writes the heat-map overlay of a packaged model's answer on a real
radiograph, the same on the TensorFlow and the JAX backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cxr.core.inference import Predictor
from cxr.core.model_store import load_model
from cxr.core.preprocessing import preprocess_image
from tests.conftest import REPO, real_images, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def _explain(*args: str, backend: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run(
        [sys.executable, "-m", "cxr.cli", "explain", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )  # fmt: skip


def test_cxr_explain_writes_the_overlay_on_both_backends(packaged_model: str, tmp_path) -> None:
    image = real_images("COVID", 1, offset=500)[0]
    answers, pixels = {}, {}
    for backend in ("tensorflow", "jax"):
        out = tmp_path / backend / "heat.png"
        done = _explain(str(image), "--model", packaged_model, "--out", str(out), backend=backend)
        assert done.returncode == 0, done.stderr[-3000:]
        answers[backend] = json.loads(done.stdout[done.stdout.index("{") :])
        with Image.open(out) as png:
            assert png.format == "PNG" and png.mode == "RGB" and png.size == (64, 64)
            pixels[backend] = np.asarray(png).astype(int)
    tf = answers["tensorflow"]
    assert tf["model"] == packaged_model and tf["forward_passes"] == 65
    assert tf["out"] == str(tmp_path / "tensorflow" / "heat.png")
    verdict = "COVID" if tf["covid_probability"] >= tf["threshold"] else "Normal"
    assert tf["label"] == ("out_of_distribution" if tf["in_distribution"] is False else verdict)
    assert (tf["in_distribution"] is None) == (tf["ood_score"] is None)
    assert tf["border_heat_share"] is None or 0 <= tf["border_heat_share"] <= 1
    # the explained probability is the model's answer through the compiled predict
    packaged = load_model(packaged_model)
    direct = Predictor(packaged.model)(preprocess_image(image.read_bytes(), 64)[None])[0]
    assert abs(tf["covid_probability"] - float(direct)) < 1e-5
    jax = answers["jax"]
    assert abs(jax["covid_probability"] - tf["covid_probability"]) < 1e-4
    assert jax["label"] == tf["label"] and jax["in_distribution"] == tf["in_distribution"]
    assert np.abs(pixels["jax"] - pixels["tensorflow"]).mean() < 2  # the same heat map


def test_cxr_explain_refuses_bad_input_with_exit_code_2(packaged_model: str, tmp_path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    done = run_cli("explain", str(text), "--model", packaged_model, "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "not a readable image" in done.stderr
    assert not (tmp_path / "x").exists()
    missing = run_cli("explain", str(tmp_path / "none.png"), "--model", packaged_model)
    assert missing.returncode == 2 and "image not found" in missing.stderr
    image = str(real_images("Normal", 1)[0])
    unknown = run_cli("explain", image, "--model", "cxr-no-such-model:latest")
    assert unknown.returncode == 2 and "not found in the BentoML store" in unknown.stderr
