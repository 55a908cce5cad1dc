"""The recipe's regularisers: weight decay, label smoothing, averaged (EMA) weights."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cxr.core.config import ConfigError, TrainConfig, load_settings
from cxr.data.dataset import Arrays
from cxr.train.models import build_model, optimizer
from cxr.train.training import train_model


def test_the_paper_trains_with_plain_adam() -> None:
    paper = load_settings("paper", environ={})
    model = build_model("lstm", 32, paper.model, paper.train)
    assert type(model.optimizer) is keras.optimizers.Adam
    assert not model.optimizer.use_ema
    assert model.loss.get_config()["label_smoothing"] == 0.0


def test_weight_decay_spares_batch_norm_and_biases() -> None:
    settings = load_settings("recipe", overrides={"train.weight_decay": 0.05}, environ={})
    model = build_model("resnet50", 32, settings.model, settings.train, steps_per_epoch=5)
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.AdamW) and opt.weight_decay == 0.05
    variables = {v.path.split("/")[-2] + "/" + v.name: v for v in model.trainable_variables}
    assert opt._use_weight_decay(variables["conv1_conv/kernel"])
    assert opt._use_weight_decay(variables["covid_probability/kernel"])
    for name in ("conv1_conv/bias", "conv1_bn/gamma", "conv1_bn/beta"):
        assert not opt._use_weight_decay(variables[name]), name


def test_label_smoothing_reaches_the_loss() -> None:
    settings = load_settings("recipe", overrides={"train.label_smoothing": 0.1}, environ={})
    model = build_model("lstm", 32, settings.model, settings.train, steps_per_epoch=5)
    assert model.loss.get_config()["label_smoothing"] == 0.1


@pytest.mark.parametrize(
    ("field", "value"), [("label_smoothing", 0.5), ("weight_decay", -1.0), ("ema_momentum", 1.0)]
)
def test_out_of_range_regularisers_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings("recipe", overrides={f"train.{field}": value}, environ={})


def _tiny_run(tmp_path: Path, ema: float | None) -> tuple[keras.Model, keras.Model]:
    """(initial model, trained checkpoint) of the LSTM baseline on 16 random images."""
    overrides = {
        "preprocess.image_size": 32,
        "preprocess.batch_size": 4,
        "train.epochs": 2,
        "train.warmup_epochs": 0,
        "train.lr_schedule": "constant",
        "train.ema_momentum": ema,
        "train.verbose": 0,
    }
    settings = load_settings("recipe", overrides=overrides, environ={})
    rng = np.random.default_rng(0)
    data = Arrays(rng.random((16, 32, 32, 3), dtype=np.float32), np.tile([0.0, 1.0], 8), [])
    keras.utils.set_random_seed(settings.train.seed)
    initial = build_model("lstm", 32, settings.model, settings.train, steps_per_epoch=2)
    trained = train_model("lstm", data, data, settings, tmp_path / str(ema))
    return initial, trained.model


def test_ema_checkpoint_keeps_the_averaged_weights(tmp_path: Path) -> None:
    """Keras starts the average at the weights after the first step; with a momentum near
    1 it stays there for the other seven steps, while the raw weights move on: the
    checkpoint must hold the average, one Adam step (<= ~learning rate) from the start."""
    initial, plain = _tiny_run(tmp_path, None)
    _, averaged = _tiny_run(tmp_path, 0.999999)
    start = initial.get_layer("lstm").get_weights()[0]
    moved = np.abs(plain.get_layer("lstm").get_weights()[0] - start).max()
    averaged_moved = np.abs(averaged.get_layer("lstm").get_weights()[0] - start).max()
    assert averaged_moved <= 1.1e-3
    assert moved > 2 * averaged_moved


def test_optimizer_follows_the_config() -> None:
    ema = optimizer(TrainConfig(ema_momentum=0.98), steps_per_epoch=None)
    assert ema.use_ema and ema.ema_momentum == 0.98
    assert type(ema) is keras.optimizers.Adam


def test_sgd_uses_nesterov_momentum_and_decays_kernels_only() -> None:
    sgd = optimizer(TrainConfig(optimizer="sgd", momentum=0.8, weight_decay=5e-4), None)
    assert type(sgd) is keras.optimizers.SGD
    assert sgd.nesterov and sgd.momentum == 0.8 and sgd.weight_decay == 5e-4
    kernel, gamma = keras.Variable(1.0, name="kernel"), keras.Variable(1.0, name="gamma")
    assert sgd._use_weight_decay(kernel) and not sgd._use_weight_decay(gamma)
