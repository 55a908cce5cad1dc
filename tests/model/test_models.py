"""The three architectures and the backbone weights options."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cxr.core.config import MODEL_NAMES, ModelConfig, TrainConfig
from cxr.core.errors import DataInputError
from cxr.train.models import build_model, resolve_weights


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
    with pytest.raises(DataInputError, match="weights file not found"):
        resolve_weights("/no/such/weights.h5")


def test_learning_rate_warms_up_then_follows_a_cosine() -> None:
    from cxr.train.models import learning_rate

    config = TrainConfig(epochs=10, learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=2)
    schedule = learning_rate(config, steps_per_epoch=5)
    at = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert at[0] == 0 and at[1] == pytest.approx(5e-4) and at[2] == pytest.approx(1e-3)
    assert at[3] == pytest.approx(5e-4, rel=1e-3) and at[4] == pytest.approx(0, abs=1e-9)
    flat = learning_rate(TrainConfig(warmup_epochs=1), steps_per_epoch=4)
    assert float(flat(2)) == pytest.approx(5e-4) and float(flat(40)) == pytest.approx(1e-3)
    assert learning_rate(TrainConfig(), steps_per_epoch=4) == 1e-3  # the paper: constant
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        learning_rate(config, steps_per_epoch=None)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_augmentation_changes_training_inputs_only(name: str) -> None:
    train = TrainConfig(augmentation={"enabled": True, "translation": 0.2, "contrast": 0.5})
    model = build_model(name, 64, ModelConfig(), train)
    assert model.layers[1].name == "augmentation"
    augment = model.get_layer("augmentation")
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32")
    assert np.array_equal(np.asarray(augment(x, training=False)), x)
    assert not np.allclose(np.asarray(augment(x, training=True)), x)
    first, second = model.predict(x, verbose=0), model.predict(x, verbose=0)
    assert np.array_equal(first, second)


def test_mixed_precision_computes_in_bfloat16_and_answers_in_float32() -> None:
    model = build_model("resnet50_lstm", 64, ModelConfig(), TrainConfig(mixed_precision=True))
    backbone = model.get_layer("resnet50")
    assert backbone.layers[2].compute_dtype == "bfloat16"  # the first convolution
    assert backbone.layers[2].variable_dtype == "float32"
    out = model(np.random.rand(2, 64, 64, 3).astype("float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert keras.config.dtype_policy().name == "float32"  # nothing else is affected
