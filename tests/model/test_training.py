"""Training helpers: the order of the models and the hybrid's hand-over from the baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxr.config import load_settings
from cxr.models import build_model
from cxr.training import TrainedModel, training_order, with_baseline_backbone


def test_baseline_trains_first_only_when_the_hybrid_needs_it() -> None:
    paper = load_settings("paper", environ={})
    assert training_order(paper.train) == ["resnet50_lstm", "resnet50", "lstm"]
    recipe = load_settings("recipe", environ={})
    assert training_order(recipe.train) == ["resnet50", "resnet50_lstm", "lstm"]


def test_hybrid_starts_from_the_baseline_weights_at_the_fine_tune_rate(tmp_path: Path) -> None:
    settings = load_settings("recipe", overrides={"preprocess.image_size": 32}, environ={})
    baseline = build_model("resnet50", 32, settings.model, settings.train, steps_per_epoch=10)
    trained = TrainedModel("resnet50", baseline, tmp_path / "x.keras", {}, 0, 0.0, "none")
    tuned = with_baseline_backbone(settings, trained, tmp_path)
    assert tuned.train.learning_rate == settings.train.fine_tune_learning_rate == 1e-4
    assert settings.train.learning_rate == 1e-3  # the caller's settings are unchanged
    hybrid = build_model("resnet50_lstm", 32, tuned.model, tuned.train, steps_per_epoch=10)
    expected = baseline.get_layer("resnet50").get_weights()
    got = hybrid.get_layer("resnet50").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_recipe_settings_are_checked() -> None:
    from cxr.config import ConfigError

    with pytest.raises(ConfigError, match="needs resnet50 and resnet50_lstm"):
        load_settings("recipe", overrides={"train.models": ["resnet50_lstm"]}, environ={})
