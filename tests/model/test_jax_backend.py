"""The model code is pure Keras 3: the recipe trains on the JAX backend too.

A GPU user (and this project's lent GPU machine, which has JAX but no TensorFlow) trains
with ``KERAS_BACKEND=jax``; a ``tf.*`` call slipped into a model, a callback or the
optimiser set-up would break that path while every TensorFlow test stays green. The
backend is fixed when Keras is imported, so the check runs in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

# The three models under the recipe (augmentation, warm-up + cosine, the hybrid starting
# from the baseline's backbone), with EMA, precise batch-norm statistics, weight decay and
# label smoothing switched on; each checkpoint is reloaded and predicts.
CHECK = """
import json
import sys
from pathlib import Path
import keras
import numpy as np
from cxr.config import load_settings
from cxr.dataset import Arrays
from cxr.devices import compute_devices
from cxr.evaluation import predict_probabilities
from cxr.training import train_model

overrides = {
    "preprocess.image_size": 32, "preprocess.batch_size": 8, "train.epochs": 2,
    "train.verbose": 0, "train.ema_momentum": 0.9, "train.precise_bn_images": 8,
    "train.weight_decay": 0.05, "train.label_smoothing": 0.1,
}
settings = load_settings("recipe", overrides=overrides, environ={})
x = np.random.default_rng(0).random((16, 32, 32, 3), dtype=np.float32)
data = Arrays(x, np.tile([0.0, 1.0], 8), [])
out = Path(sys.argv[1])
baseline = train_model("resnet50", data, data, settings, out)
hybrid = train_model("resnet50_lstm", data, data, settings, out, baseline)
lstm = train_model("lstm", data, data, settings, out)
answers = {}
for trained in (baseline, hybrid, lstm):
    reloaded = keras.saving.load_model(trained.checkpoint)
    answers[trained.name] = predict_probabilities(reloaded, x).tolist()
print(json.dumps({"backend": compute_devices()["backend"], "answers": answers,
                  "backbone_init": hybrid.backbone_init}))
"""


def test_recipe_trains_and_reloads_on_the_jax_backend(tmp_path) -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax"
    assert report["backbone_init"].endswith("resnet50_backbone.weights.h5")
    for name, answers in report["answers"].items():
        assert len(answers) == 16 and all(0.0 <= p <= 1.0 for p in answers), name
