"""The three architectures and the backbone weights options."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cxr.config import ModelConfig, TrainConfig
from cxr.models import MODEL_NAMES, build_model, resolve_weights


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_model_outputs_one_probability(name: str) -> None:
    model = build_model(name, 64, ModelConfig(), TrainConfig())
    out = np.asarray(model(np.random.rand(2, 64, 64, 3).astype("float32")))
    assert out.shape == (2, 1) and np.all((out >= 0) & (out <= 1))
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-3)


def test_hybrid_follows_the_paper() -> None:
    model = build_model("resnet50_lstm", 224, ModelConfig(), TrainConfig())
    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    assert [layer.units for layer in lstms] == [32, 16, 8]
    assert model.get_layer("to_sequence").output.shape == (None, 49, 2048)  # 7x7 positions
    assert model.get_layer("resnet50").count_params() > 23_000_000


def test_pooled_2x2_reading_gives_four_steps() -> None:
    model = build_model("resnet50_lstm", 224, ModelConfig(sequence_mode="pooled2x2"), TrainConfig())
    assert model.get_layer("to_sequence").output.shape == (None, 4, 2048)


def test_bn_momentum_override() -> None:
    model = build_model("resnet50", 64, ModelConfig(bn_momentum=0.9), TrainConfig())
    bns = [
        layer
        for layer in model.get_layer("resnet50").layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert bns and all(layer.momentum == 0.9 for layer in bns)


def test_weights_file_is_loaded(tmp_path: Path) -> None:
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    model = build_model("resnet50", 64, ModelConfig(backbone_weights=str(path)), TrainConfig())
    loaded = model.get_layer("resnet50").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(loaded, source.get_weights(), strict=True))


def test_weights_options() -> None:
    assert resolve_weights("none") is None
    assert resolve_weights("imagenet") == "imagenet"
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        resolve_weights("/no/such/weights.h5")
