"""Precise batch-norm statistics: what is re-estimated, from what, and when."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cxr.core.config import Settings, load_settings
from cxr.data.dataset import Arrays
from cxr.train.models import build_model
from cxr.train.precise_bn import recalibrate_batch_norm
from cxr.train.training import TrainedModel, train_model, with_baseline_backbone

SIZE = 32


def _settings(overrides: dict[str, object] | None = None) -> Settings:
    base = {
        "preprocess.image_size": SIZE,
        "preprocess.batch_size": 4,
        "train.mixed_precision": False,
        "train.verbose": 0,
    }
    return load_settings("recipe", overrides=base | (overrides or {}), environ={})


def _batch_statistics(model: keras.Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over batches of 4 of conv1_bn's per-batch input mean and variance."""
    backbone = model.get_layer("resnet50")
    conv1 = keras.Model(backbone.input, backbone.get_layer("conv1_conv").output)
    outputs = [np.asarray(conv1(images[i : i + 4])) for i in range(0, len(images), 4)]
    means = [o.mean(axis=(0, 1, 2)) for o in outputs]
    variances = [o.var(axis=(0, 1, 2)) for o in outputs]
    return np.mean(means, axis=0), np.mean(variances, axis=0)


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(1).random((n, SIZE, SIZE, 3), dtype=np.float32)


def test_statistics_become_the_mean_of_the_batch_statistics() -> None:
    settings = _settings()
    model = build_model("resnet50", SIZE, settings.model, settings.train, steps_per_epoch=2)
    images = _images(12)
    bn = model.get_layer("resnet50").get_layer("conv1_bn")
    assert recalibrate_batch_norm(model, images, batch_size=4) == 3
    mean, variance = _batch_statistics(model, images)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), variance, rtol=1e-3, atol=1e-6)
    assert bn.momentum == 0.9  # the recipe's momentum is back for training


def test_frozen_stages_keep_their_statistics(tmp_path: Path) -> None:
    settings = _settings()
    baseline = build_model("resnet50", SIZE, settings.model, settings.train, steps_per_epoch=2)
    trained = TrainedModel("resnet50", baseline, tmp_path / "x.keras", {}, 0, 0.0, "none")
    tuned = with_baseline_backbone(settings, trained, tmp_path)  # recipe: conv5 trains
    hybrid = build_model("resnet50_lstm", SIZE, tuned.model, tuned.train, steps_per_epoch=2)
    backbone = hybrid.get_layer("resnet50")
    before = {name: np.asarray(backbone.get_layer(name).moving_mean).copy()
              for name in ("conv1_bn", "conv4_block6_3_bn", "conv5_block3_3_bn")}  # fmt: skip
    recalibrate_batch_norm(hybrid, _images(8), batch_size=4)
    after = {name: np.asarray(backbone.get_layer(name).moving_mean) for name in before}
    assert np.array_equal(before["conv1_bn"], after["conv1_bn"])
    assert np.array_equal(before["conv4_block6_3_bn"], after["conv4_block6_3_bn"])
    assert not np.array_equal(before["conv5_block3_3_bn"], after["conv5_block3_3_bn"])


def test_models_without_batch_norm_are_left_alone() -> None:
    settings = _settings()
    lstm = build_model("lstm", SIZE, settings.model, settings.train, steps_per_epoch=2)
    assert recalibrate_batch_norm(lstm, _images(4), batch_size=4) == 0


def _conv1_after_training(
    tmp_path: Path, precise_bn_images: int, ema: float | None
) -> tuple[keras.layers.Layer, np.ndarray, np.ndarray]:
    """Train one epoch on 16 images; conv1_bn of the checkpoint, and the mean of the
    batch statistics of the checkpoint's own weights on those images."""
    images = _images(16)
    data = Arrays(images, np.tile([0.0, 1.0], 8), [])
    overrides = {
        "train.epochs": 1,
        "train.warmup_epochs": 0,
        "train.precise_bn_images": precise_bn_images,
        "train.ema_momentum": ema,
    }
    trained = train_model("resnet50", data, data, _settings(overrides), tmp_path)
    bn = trained.model.get_layer("resnet50").get_layer("conv1_bn")
    return bn, *_batch_statistics(trained.model, images)


@pytest.mark.parametrize("ema", [None, 0.5])
def test_checkpoint_holds_statistics_of_its_own_weights(tmp_path: Path, ema: float | None) -> None:
    """Training leaves momentum-0.9 statistics of augmented batches; the checkpoint
    must instead hold the statistics of its (with EMA: averaged) weights on the
    un-augmented training images."""
    bn, mean, variance = _conv1_after_training(tmp_path, 16, ema)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), variance, rtol=1e-3, atol=1e-6)


def test_without_precise_statistics_the_checkpoint_keeps_the_moving_ones(tmp_path: Path) -> None:
    """The control: the check above would fail without the re-estimation."""
    bn, mean, _ = _conv1_after_training(tmp_path, 0, None)
    assert not np.allclose(np.asarray(bn.moving_mean), mean, rtol=1e-3)
