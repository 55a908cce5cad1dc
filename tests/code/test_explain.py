"""Occlusion explanations find the region a model depends on, on TensorFlow and on JAX.

The backend is fixed when Keras is imported, so each backend runs in its own process: a
model that looks only at one quadrant of its input is explained through the compiled
``Predictor``, and the heat must lie in that quadrant."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cxr.core import explain as ex
from cxr.train.explanations import select_examples
from tests.conftest import REPO

# A 32-px model whose P(COVID) is sigmoid(10 * mean(quadrant) - 5), where quadrant is the
# top-left or the top-right 16x16 block (a transposed heat map would fail the second); two
# images per model: a bright quadrant (COVID, p 0.88) and a dark one (Normal, p 0.12).
SCRIPT = """
import json, sys
import keras
import numpy as np
from cxr.core.explain import explain
from cxr.core.inference import Predictor

def quadrant_model(corner):
    crop = ((0, 16), (0, 16)) if corner == "top_left" else ((0, 16), (16, 0))
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Cropping2D(crop),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.layers[-1].set_weights([np.full((3, 1), 10 / 3, np.float32), np.array([-5.0])])
    return model

rng = np.random.default_rng(0)
out = {"backend": keras.backend.backend()}
for corner in ("top_left", "top_right"):
    predict = Predictor(quadrant_model(corner), max_batch_size=16)
    for level in ("bright", "dark"):
        x = np.full((32, 32, 3), 0.5, np.float32) + rng.normal(0, 0.02, (32, 32, 3))
        block = (slice(0, 16), slice(0, 16) if corner == "top_left" else slice(16, 32))
        x[block] = 0.7 if level == "bright" else 0.3
        e = explain(x.astype(np.float32), predict, cutoff=0.5)
        out[f"{corner}/{level}"] = {
            "heat": e.heat.tolist(), "p": e.covid_probability,
            "covid": e.predicted_covid, "passes": e.passes,
        }
json.dump(out, sys.stdout)
"""


def _run(backend: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_heat_lies_in_the_quadrant_the_model_reads(backend: str) -> None:
    result = _run(backend)
    assert result["backend"] == backend
    for corner in ("top_left", "top_right"):
        for level, covid in (("bright", True), ("dark", False)):
            case = result[f"{corner}/{level}"]
            assert case["covid"] is covid and case["passes"] == ex.passes() <= 65
            heat = np.asarray(case["heat"])
            assert heat.shape == (32, 32) and heat.min() >= 0 and heat.max() > 0.01
            quadrants = {
                "top_left": heat[:16, :16].sum(),
                "bottom_right": heat[16:, 16:].sum(),
                "top_right": heat[:16, 16:].sum(),
                "bottom_left": heat[16:, :16].sum(),
            }
            assert quadrants[corner] / heat.sum() > 0.8, (corner, level, quadrants)
            peak = np.unravel_index(heat.argmax(), heat.shape)
            assert peak[0] < 16 and (peak[1] < 16) == (corner == "top_left"), peak
            # pixels no patch touching the quadrant covers get no heat (float noise aside)
            far = heat[24:, 24:] if corner == "top_left" else heat[24:, :8]
            assert far.max() < 1e-3 * heat.max()


def test_patches_cover_the_image_within_the_pass_bound() -> None:
    for size in (32, 64, 224, 299):
        boxes = ex.patch_boxes(size)
        covered = np.zeros((size, size), int)
        for top, left, bottom, right in boxes:
            assert 0 <= top < bottom <= size and 0 <= left < right <= size
            covered[top:bottom, left:right] += 1
        assert covered.min() >= 1 and len(boxes) + 1 == ex.passes() == 65
    with pytest.raises(ValueError, match="at most 65 passes"):
        ex.patch_boxes(224, grid=9)
    with pytest.raises(ValueError, match="too small"):
        ex.patch_boxes(8)


def test_occluded_inputs_start_with_the_image_and_hide_one_patch_each() -> None:
    x = np.random.default_rng(1).random((64, 64, 3), dtype=np.float32)
    batch = ex.occluded_inputs(x, grid=4)
    assert batch.shape == (17, 64, 64, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], x)
    top, left, bottom, right = ex.patch_boxes(64, grid=4)[5]
    patch = batch[6, top:bottom, left:right]
    np.testing.assert_allclose(patch, np.broadcast_to(x.mean(axis=(0, 1)), patch.shape))
    changed = (batch[6] != x).any(axis=2)
    assert not changed[:top].any() and not changed[bottom:].any()
    with pytest.raises(ValueError, match="square model input"):
        ex.occluded_inputs(x[:32])
    with pytest.raises(ValueError, match="expected 17 probabilities"):
        ex.heat_from_probabilities(np.zeros(10), 64, 0.5, grid=4)


def test_heat_is_the_drop_toward_the_predicted_class() -> None:
    grid, size = 2, 30
    # COVID verdict (0.8): patch 0 lowers it to 0.5 (heat 0.3), patch 3 raises it (no heat)
    covid = ex.heat_from_probabilities(np.array([0.8, 0.5, 0.8, 0.8, 0.9]), size, 0.5, grid)
    assert covid.predicted_covid and covid.passes == 5
    assert covid.heat[0, 0] == pytest.approx(0.3) and covid.heat[-1, -1] == 0
    # Normal verdict (0.2): patch 3 raises P(COVID) to 0.6: that patch drove "Normal"
    normal = ex.heat_from_probabilities(np.array([0.2, 0.1, 0.2, 0.2, 0.6]), size, 0.5, grid)
    assert not normal.predicted_covid
    assert normal.heat[-1, -1] == pytest.approx(0.4) and normal.heat[0, 0] == 0
    assert ex.heat_from_probabilities(np.full(5, 0.7), size, 0.5, grid).border_share is None


def test_border_share() -> None:
    assert ex.border_share(np.ones((100, 100))) == pytest.approx(ex.UNIFORM_BORDER_SHARE)
    assert ex.UNIFORM_BORDER_SHARE == pytest.approx(0.36)
    frame = np.ones((100, 100))
    frame[10:90, 10:90] = 0
    assert ex.border_share(frame) == pytest.approx(1.0)
    centre = np.zeros((100, 100))
    centre[40:60, 40:60] = 1
    assert ex.border_share(centre) == 0.0
    assert ex.border_share(np.zeros((10, 10))) is None


def test_overlay_png_is_the_input_size_and_leaves_cold_regions_unchanged() -> None:
    x = np.repeat(np.linspace(0, 1, 48 * 48, dtype=np.float32).reshape(48, 48, 1), 3, axis=2)
    heat = np.zeros((48, 48), np.float32)
    heat[:12, :12] = 0.2
    explanation = ex.Explanation(heat, 0.9, True, 65)
    image = Image.open(io.BytesIO(ex.overlay_png(x, explanation)))
    assert image.format == "PNG" and image.size == (48, 48) and image.mode == "RGB"
    rgb = np.asarray(image).astype(int)
    gray = np.rint(x[..., 0] * 255).astype(int)
    np.testing.assert_array_equal(rgb[30:, 30:], np.repeat(gray[30:, 30:, None], 3, axis=2))
    hot = rgb[2, 2]
    assert hot[0] > hot[2] + 50  # the hottest region is tinted red
    # no heat at all: the radiograph comes back untouched
    cold = ex.overlay(x[..., 0], np.zeros((48, 48)))
    np.testing.assert_array_equal(cold[..., 1], gray)


def test_examples_cover_right_and_wrong_answers_of_both_classes() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0, 1, 0])
    probabilities = np.array([0.9, 0.99, 0.7, 0.1, 0.3, 0.05, 0.2, 0.8, 0.4, 0.6])
    chosen = select_examples(labels, probabilities, 0.5, n=8)
    assert chosen[:4] == [1, 5, 6, 7]  # most confident COVID/Normal right, then wrong
    assert len(chosen) == len(set(chosen)) == 8
    predicted = probabilities[chosen] >= 0.5
    groups = {
        (int(labels[i]), bool(p == labels[i])) for i, p in zip(chosen, predicted, strict=True)
    }
    assert groups == {(1, True), (0, True), (1, False), (0, False)}
    assert sorted(select_examples(labels[:3], probabilities[:3], 0.5)) == [0, 1, 2]


def _crop_reader(crop: tuple[tuple[int, int], tuple[int, int]]):
    """A 32-px Keras model whose P(COVID) is sigmoid(10 * mean(block) - 5) of one block."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Cropping2D(crop),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.layers[-1].set_weights([np.full((3, 1), 10 / 3, np.float32), np.array([-5.0])])
    return model


def test_a_run_explains_test_images_into_a_grid_and_a_border_share(tmp_path) -> None:
    from cxr.train.explanations import explain_test_images

    rng = np.random.default_rng(2)
    x = np.full((10, 32, 32, 3), 0.5, np.float32) + rng.normal(0, 0.02, (10, 32, 32, 3))
    x[:5, :4], x[:5, 8:24, 8:24] = 0.7, 0.7  # COVID answers: bright top strip and centre
    x[5:, :4], x[5:, 8:24, 8:24] = 0.3, 0.3  # Normal answers: dark ones
    x = x.astype(np.float32)
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1])  # the 4th and the last are wrong
    readers = {
        "lungs": _crop_reader(((8, 8), (8, 8))),  # reads the centre
        "marker": _crop_reader(((0, 28), (0, 0))),  # reads the top 4 rows: a shortcut
    }
    summaries = {}
    for name, model in readers.items():
        probabilities = np.asarray(model(x)).reshape(-1)
        path = tmp_path / f"{name}.png"
        summaries[name] = explain_test_images(
            model, x, labels, probabilities, 0.5, ["Normal", "COVID"], name, path
        )
        with Image.open(path) as grid:
            assert grid.format == "PNG" and grid.width > 600
    summary = summaries["lungs"]
    assert summary["images"] == 8 and summary["passes_per_image"] == 65
    rows = summary["per_image"]
    assert {(row["label"], row["predicted"]) for row in rows} == {
        ("COVID", "COVID"), ("Normal", "Normal"), ("COVID", "Normal"), ("Normal", "COVID"),
    }  # fmt: skip
    shares = [row["border_heat_share"] for row in rows]
    assert summary["border_heat_share_mean"] == pytest.approx(np.mean(shares), abs=1e-3)
    # the border share tells a model reading a top-edge marker from one reading the centre
    assert summary["uniform_border_share"] == 0.36
    assert summaries["lungs"]["border_heat_share_mean"] < 0.1  # 0.0 measured
    assert summaries["marker"]["border_heat_share_mean"] > 0.5  # 0.63 measured


def test_a_run_explains_the_calibrated_probabilities_it_was_evaluated_with(tmp_path) -> None:
    from cxr.core.calibration import calibrate
    from cxr.train.explanations import explain_test_images

    model = _crop_reader(((8, 8), (8, 8)))
    x = np.full((4, 32, 32, 3), 0.5, np.float32)
    x[:2, 8:24, 8:24], x[2:, 8:24, 8:24] = 0.7, 0.35
    raw = np.asarray(model(x)).reshape(-1)
    calibrated = calibrate(raw, 2.0)  # softer than the raw 0.88 / 0.18
    labels = np.array([1, 0, 1, 0])
    summary = explain_test_images(
        model, x, labels, calibrated, 0.5, ["Normal", "COVID"], "t", tmp_path / "g.png", 2.0
    )
    explained = {row["index"]: row["covid_probability"] for row in summary["per_image"]}
    assert sorted(explained) == [0, 1, 2, 3]
    for index, probability in explained.items():
        assert probability == pytest.approx(calibrated[index], abs=1e-4)
        assert abs(probability - raw[index]) > 0.05  # not the raw sigmoid output
