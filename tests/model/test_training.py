"""Training helpers: the order of the models and the hybrid's hand-over from the baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxr.core.config import load_settings
from cxr.train.models import build_model
from cxr.train.training import TrainedModel, training_order, with_baseline_backbone


def test_baseline_trains_first_only_when_the_hybrid_needs_it() -> None:
    paper = load_settings("paper", environ={})
    assert training_order(paper.train) == ["resnet50_lstm", "resnet50", "lstm"]
    recipe = load_settings("recipe", environ={})
    assert training_order(recipe.train) == ["resnet50", "resnet50_lstm", "lstm"]


def test_hybrid_starts_from_the_baseline_weights_at_the_fine_tune_rate(tmp_path: Path) -> None:
    settings = load_settings(
        "recipe",
        overrides={"preprocess.image_size": 32, "train.fine_tune_epochs": 3},
        environ={},
    )
    baseline = build_model("resnet50", 32, settings.model, settings.train, steps_per_epoch=10)
    trained = TrainedModel("resnet50", baseline, tmp_path / "x.keras", {}, 0, 0.0, 0.0, "none")
    tuned, stage = with_baseline_backbone(settings, trained, tmp_path)
    assert stage == "conv5"
    assert tuned.train.learning_rate == settings.train.fine_tune_learning_rate == 1e-4
    assert tuned.train.epochs == 3 and settings.train.epochs == 24
    assert settings.train.learning_rate == 1e-3  # the caller's settings are unchanged
    hybrid = build_model("resnet50_lstm", 32, tuned.model, tuned.train, 10, stage)
    expected = baseline.get_layer("resnet50").get_weights()
    got = hybrid.get_layer("resnet50").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_fine_tune_epochs_default_to_the_baselines_epochs(tmp_path: Path) -> None:
    settings = load_settings("recipe", overrides={"preprocess.image_size": 32}, environ={})
    assert settings.train.fine_tune_epochs is None
    baseline = build_model("resnet50", 32, settings.model, settings.train, steps_per_epoch=10)
    trained = TrainedModel("resnet50", baseline, tmp_path / "x.keras", {}, 0, 0.0, 0.0, "none")
    tuned, _ = with_baseline_backbone(settings, trained, tmp_path)
    assert tuned.train.epochs == settings.train.epochs


def test_recipe_settings_are_checked() -> None:
    from cxr.core.config import ConfigError

    with pytest.raises(ConfigError, match="needs resnet50 in models to train the hybrid"):
        load_settings("recipe", overrides={"train.models": ["resnet50_lstm"]}, environ={})
    lstm_only = {"train.models": ["lstm"], "gate.model": "lstm"}  # nothing to hand over
    assert training_order(load_settings("recipe", overrides=lstm_only, environ={}).train) == [
        "lstm"
    ]
    settings = load_settings("paper", environ={})
    with pytest.raises(ValueError, match="needs pretrained backbone weights"):
        build_model("resnet50", 32, settings.model, settings.train, trainable_from="conv4")


def test_hybrid_fine_tunes_only_the_stages_asked_for(tmp_path: Path) -> None:
    settings = load_settings(
        "recipe",
        overrides={"preprocess.image_size": 32, "train.hybrid_trainable_from": "conv5"},
        environ={},
    )
    baseline = build_model("resnet50", 32, settings.model, settings.train, steps_per_epoch=10)
    trained = TrainedModel("resnet50", baseline, tmp_path / "x.keras", {}, 0, 0.0, 0.0, "none")
    tuned, stage = with_baseline_backbone(settings, trained, tmp_path)
    hybrid = build_model("resnet50_lstm", 32, tuned.model, tuned.train, 10, stage)
    backbone = hybrid.get_layer("resnet50")
    trainable = {layer.name[:5] for layer in backbone.layers if layer.trainable and layer.weights}
    assert trainable == {"conv5"}
    frozen_before = [w.copy() for w in backbone.get_layer("conv4_block6_2_conv").get_weights()]
    tuned_before = [w.copy() for w in backbone.get_layer("conv5_block3_2_conv").get_weights()]
    bn_before = [w.copy() for w in backbone.get_layer("conv2_block1_1_bn").get_weights()]
    x = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    y = np.array([0, 1] * 4, dtype=np.float32)
    hybrid.fit(x, y, batch_size=2, epochs=1, verbose=0)  # step 0 of the warm-up has rate 0
    frozen_after = backbone.get_layer("conv4_block6_2_conv").get_weights()
    bn_after = backbone.get_layer("conv2_block1_1_bn").get_weights()  # moving statistics too
    tuned_after = backbone.get_layer("conv5_block3_2_conv").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(frozen_before, frozen_after, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(bn_before, bn_after, strict=True))
    assert not np.array_equal(tuned_before[0], tuned_after[0])
    # the baseline itself trains every stage
    assert all(layer.trainable for layer in baseline.get_layer("resnet50").layers)
