"""Configuration layering: defaults < profile < file < environment < overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr.core.config import (
    ConfigError,
    available_profiles,
    environment_overrides,
    load_settings,
    parse_assignments,
)


def test_defaults_are_the_papers_settings() -> None:
    s = load_settings("paper", environ={})
    assert s.data.samples_per_class == 500
    assert s.preprocess.image_size == 224
    assert (s.preprocess.val_fraction, s.preprocess.test_fraction) == (0.1, 0.1)
    assert s.preprocess.batch_size == 32
    assert (s.train.epochs, s.train.learning_rate) == (15, 1e-3)
    assert s.model.lstm_units == [32, 16, 8]
    assert s.gate.min_score == 0.95 and s.gate.model == "resnet50_lstm"
    assert s.decision.cutoff == 0.5 and not s.decision.cutoff_from_validation


def test_layers_override_in_order(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  epochs: 7\n  seed: 1\npreprocess:\n  image_size: 96\n")
    environ = {"CXR_TRAIN__EPOCHS": "9", "CXR_GATE__MIN_SCORE": "0.9"}
    s = load_settings("demo", file, {"train.seed": 5}, environ=environ)
    assert s.profile == "demo"
    assert s.model.bn_momentum == 0.9  # from the demo profile
    assert s.preprocess.image_size == 96  # file beats profile
    assert s.train.epochs == 9  # environment beats file
    assert s.train.seed == 5  # override beats file
    assert s.gate.min_score == 0.9


def test_environment_values_are_parsed() -> None:
    found = environment_overrides({"CXR_TRAIN__MODELS": "[lstm]", "CXR_OTHER": "x", "HOME": "/"})
    assert found == {"train": {"models": ["lstm"]}}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"profile": "nope"}, "unknown profile"),
        ({"overrides": {"train.epochs": "many"}}, "invalid configuration"),
        ({"overrides": {"train.unknown_key": 1}}, "invalid configuration"),
        ({"overrides": {"gate.model": "vgg16"}}, "invalid configuration"),
        ({"config_file": Path("/no/such/file.yaml")}, "not found"),
        ({"overrides": {"train.models": ["lstm"]}}, "gate.model must be one of train.models"),
        ({"overrides": {"preprocess.test_fraction": 0.95}}, "val_fraction"),
        ({"overrides": {"preprocess.image_size": 16}}, "image_size must be >= 32"),
        ({"overrides": {"gate.min_score": 95}}, "min_score"),
        ({"overrides": {"decision.cutoff": 1.0}}, "cutoff"),
        ({"overrides": {"data.samples_per_class": 0}}, "samples_per_class"),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={}, **kwargs)


def test_profiles_are_listed() -> None:
    assert {"paper", "demo"} <= set(available_profiles())


@pytest.mark.parametrize(
    ("old", "message"),
    [
        ({"gate.threshold": 0.9}, "gate.threshold is now gate.min_score"),
        ({"gate.decision_threshold": 0.4}, "gate.decision_threshold is now decision.cutoff"),
        ({"gate.calibrate_threshold": True}, "is now decision.cutoff_from_validation"),
        ({"train.ema_momentum": 0.99}, "train.ema_momentum was removed"),
        ({"preprocess.equalize": True}, "preprocess.equalize was removed"),
    ],
)
def test_renamed_and_removed_settings_say_what_to_use(old: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings("paper", overrides=old, environ={})
    env = {f"CXR_{key.replace('.', '__').upper()}": str(v) for key, v in old.items()}
    with pytest.raises(ConfigError, match=message):
        load_settings("paper", environ=env)


def test_set_assignments_are_parsed() -> None:
    assert parse_assignments(["model.dropout=0.3", "train.models=[lstm]"]) == {
        "model.dropout": 0.3,
        "train.models": ["lstm"],
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["model.dropout"])
