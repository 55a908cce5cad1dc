"""The pretrained path: a ResNet50 that starts from ImageNet weights (here a weights file
of the right shape, saved from a randomly initialised ResNet50) gets ImageNet's input
normalization inside the model, and the saved model keeps it."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cxr.core.config import ModelConfig, TrainConfig, load_settings
from cxr.train.models import IMAGENET_BGR_MEANS, build_model

SIZE = 32


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet50 weights saved the way a user saves ImageNet ones (random init here)."""
    source = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)
    )
    path = tmp_path_factory.mktemp("weights") / "resnet50_imagenet.weights.h5"
    source.save_weights(path)
    return path


def _gray_images(n: int) -> np.ndarray:
    """[0, 1] gray images copied to three channels, what the one preprocessing function
    produces."""
    gray = np.random.default_rng(0).random((n, SIZE, SIZE, 1), dtype=np.float32)
    return np.repeat(gray, 3, axis=-1)


@pytest.mark.parametrize("name", ["resnet50", "resnet50_lstm"])
def test_weights_file_and_imagenet_normalization(
    name: str, weights_file: Path, tmp_path: Path
) -> None:
    config = ModelConfig(backbone_weights=str(weights_file), input_normalization="imagenet")
    model = build_model(name, SIZE, config, TrainConfig())
    expected = keras.applications.ResNet50(
        include_top=False, weights=str(weights_file), input_shape=(SIZE, SIZE, 3)
    ).get_weights()
    loaded = model.get_layer("resnet50").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(loaded, expected, strict=True))

    block = model.get_layer("imagenet_preprocess")
    x = _gray_images(2)
    normalized = np.asarray(block(x))
    reference = keras.applications.resnet50.preprocess_input(x * 255.0)  # caffe: BGR - means
    np.testing.assert_allclose(normalized, reference, atol=1e-4)
    white = np.asarray(block(np.ones((1, SIZE, SIZE, 3), np.float32)))[0, 0, 0]
    np.testing.assert_allclose(white, 255.0 - np.array(IMAGENET_BGR_MEANS), atol=1e-4)
    if name == "resnet50":  # the backbone reads the normalized images
        features = keras.Model(model.input, model.get_layer("gap").output).predict(x, verbose=0)
        direct = np.asarray(model.get_layer("resnet50")(reference)).mean(axis=(1, 2))
        np.testing.assert_allclose(features, direct, rtol=1e-4, atol=1e-4)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert [layer.name for layer in reloaded.get_layer("imagenet_preprocess").layers] == [
        "to_0_255",
        "minus_imagenet_means",
    ]
    np.testing.assert_allclose(
        np.asarray(reloaded.get_layer("imagenet_preprocess")(x)), reference, atol=1e-4
    )
    np.testing.assert_allclose(
        np.asarray(reloaded.predict(x, verbose=0)), np.asarray(model.predict(x, verbose=0)),
        atol=1e-6,
    )  # fmt: skip
    assert reloaded.layers[-1].name == "covid_probability"


def test_normalization_changes_what_the_backbone_sees(weights_file: Path) -> None:
    bare = ModelConfig(backbone_weights=str(weights_file))
    normalized = bare.model_copy(update={"input_normalization": "imagenet"})
    x = _gray_images(2)
    plain = build_model("resnet50", SIZE, bare, TrainConfig())
    with_norm = build_model("resnet50", SIZE, normalized, TrainConfig())
    assert "imagenet_preprocess" not in [layer.name for layer in plain.layers]
    # same weights, other input scaling: other features
    plain_features = plain.get_layer("gap").output
    assert plain_features.shape == with_norm.get_layer("gap").output.shape
    a = keras.Model(plain.input, plain_features).predict(x, verbose=0)
    b = keras.Model(with_norm.input, with_norm.get_layer("gap").output).predict(x, verbose=0)
    assert not np.allclose(a, b)


def test_lstm_baseline_has_no_backbone_and_no_normalization() -> None:
    model = build_model("lstm", SIZE, ModelConfig(input_normalization="imagenet"), TrainConfig())
    assert "imagenet_preprocess" not in [layer.name for layer in model.layers]


def test_normalization_stays_float32_under_mixed_precision(weights_file: Path) -> None:
    config = ModelConfig(backbone_weights=str(weights_file), input_normalization="imagenet")
    model = build_model("resnet50", SIZE, config, TrainConfig(mixed_precision=True))
    block = model.get_layer("imagenet_preprocess")
    assert all(layer.compute_dtype == "float32" for layer in block.layers)
    assert model.get_layer("resnet50").compute_dtype == "bfloat16"
    np.testing.assert_allclose(
        np.asarray(block(_gray_images(1))),
        keras.applications.resnet50.preprocess_input(_gray_images(1) * 255.0),
        atol=1e-4,
    )


def test_pretrained_profile_and_paper_profile() -> None:
    pretrained = load_settings("pretrained", environ={})
    assert pretrained.model.backbone_weights == "imagenet"
    assert pretrained.model.input_normalization == "imagenet"
    assert pretrained.preprocess.image_size == 224
    assert pretrained.train.learning_rate < 1e-3  # fine-tuning, not the paper's 1e-3
    assert pretrained.train.lr_schedule == "cosine" and pretrained.train.warmup_epochs >= 1
    paper = load_settings("paper", environ={})
    assert paper.model.input_normalization == "none"  # the paper's bare /255
    with pytest.raises(ValueError, match="input_normalization"):
        load_settings("paper", overrides={"model.input_normalization": "caffe"}, environ={})
