"""The out-of-distribution detector: scoring, threshold, feature taps, compiled path."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.covariance import LedoitWolf

from cxr.core.config import load_settings
from cxr.core.inference import Predictor
from cxr.core.ood import OUT_OF_DISTRIBUTION, default_layers, load_detector, verdicts
from cxr.monitor.reference import build_reference, monitored
from cxr.train.models import build_network
from cxr.train.ood import choose_threshold, fit_detector, refusal_summary


@pytest.fixture(scope="module")
def lstm_model():
    settings = load_settings("demo", environ={})
    return build_network("lstm", 32, settings.model)


def test_score_is_the_mahalanobis_distance_under_the_ledoit_wolf_covariance(
    lstm_model, tmp_path
) -> None:
    rng = np.random.default_rng(0)
    train, val = rng.random((60, 32, 32, 3), np.float32), rng.random((40, 32, 32, 3), np.float32)
    detector = fit_detector(lstm_model, train, val, keep_share=0.9)
    assert detector.layers == ["covid_probability"]
    features = lstm_model.predict(train, verbose=0)  # checks the feature model below
    direct_features = np.asarray(
        keras.Model(lstm_model.inputs, lstm_model.get_layer("dropout").output)(train)
    )
    fitted = LedoitWolf().fit(direct_features)
    probe = direct_features[:5]
    centred = probe - fitted.location_
    inverse = np.linalg.inv(fitted.covariance_)
    expected = np.sqrt(np.einsum("nd,de,ne->n", centred, inverse, centred))
    np.testing.assert_allclose(detector.score(probe), expected, rtol=1e-4)
    # the compiled two-output path gives the single-output model's probabilities
    probabilities, train_features = Predictor(lstm_model, 8, detector.layers).outputs(train)
    np.testing.assert_allclose(probabilities, features.reshape(-1), atol=1e-6)
    np.testing.assert_allclose(train_features, direct_features, atol=1e-5)
    # saved and loaded, it scores the same (precision stored in float32)
    loaded = load_detector(detector.save(tmp_path / "ood.npz"))
    assert loaded.layers == detector.layers and loaded.threshold == detector.threshold
    np.testing.assert_allclose(loaded.score(probe), detector.score(probe), rtol=1e-5)
    assert load_detector(tmp_path / "missing.npz") is None


def test_threshold_keeps_the_configured_share_of_validation(lstm_model) -> None:
    scores = np.random.default_rng(1).gamma(2.0, size=401)
    for keep in (0.5, 0.9, 0.975, 1.0):
        threshold = choose_threshold(scores, keep)
        kept = np.mean(scores <= threshold)
        assert keep <= kept <= keep + 1 / len(scores)
    rng = np.random.default_rng(2)
    train, val = rng.random((80, 32, 32, 3), np.float32), rng.random((80, 32, 32, 3), np.float32)
    detector = fit_detector(lstm_model, train, val, keep_share=0.975)
    val_scores = detector.score(Predictor(lstm_model, 32, detector.layers).outputs(val)[1])
    assert 0.975 <= detector.in_distribution(val_scores).mean() <= 0.975 + 1 / 80
    summary = refusal_summary(detector, val_scores)
    assert summary["refused"] == int((val_scores > detector.threshold).sum()) <= 2
    low, high = summary["refused_ci95"]
    assert low <= summary["refused_share"] <= high


def test_feature_taps_of_the_three_networks() -> None:
    config = load_settings("demo", environ={}).model
    hybrid = build_network("resnet50_lstm", 32, config)
    assert default_layers(hybrid) == ["resnet50/conv2_block3_out"]
    assert default_layers(build_network("resnet50", 32, config)) == default_layers(hybrid)
    x = np.random.default_rng(3).random((3, 32, 32, 3), np.float32)
    probabilities, features = Predictor(hybrid, 4, default_layers(hybrid)).outputs(x)
    assert features.shape == (3, 256)  # the second stage's 256 channels, averaged
    # the replayed chain is the model: same probabilities, and the tap is the stage's map
    np.testing.assert_allclose(probabilities, Predictor(hybrid, 4)(x), atol=1e-6)
    backbone = hybrid.get_layer("resnet50")
    stage = keras.Model(backbone.inputs, backbone.get_layer("conv2_block3_out").output)
    np.testing.assert_allclose(features, np.asarray(stage(x)).mean(axis=(1, 2)), atol=1e-5)
    both = Predictor(hybrid, 4, ["resnet50/conv2_block3_out", "covid_probability"]).outputs(x)[1]
    assert both.shape == (3, 256 + 8)
    scores, flags = verdicts(None, None, 3)
    assert np.isnan(scores).all() and np.isnan(flags).all()


def test_reference_has_the_ood_column_and_monitoring_skips_it_when_absent() -> None:
    images = pd.DataFrame(
        {"path": ["a", "b"], "width": 299, "height": 299, "mode": "L", "bytes": 10,
         "mean_intensity": 1.0, "std_intensity": 1.0, "entropy": 1.0, "sharpness": 1.0,
         "dark_fraction": 0.0}
    )  # fmt: skip
    predictions = pd.DataFrame(
        {"path": ["a", "b"], "label_index": [1, 0], "covid_probability": [0.9, 0.2],
         "ood_score": [3.0, 90.0], "in_distribution": [True, False]}
    )  # fmt: skip
    reference = build_reference(images, predictions, ["Normal", "COVID"], 0.5)
    assert reference["label"].tolist() == ["COVID", OUT_OF_DISTRIBUTION]
    assert reference["ood_score"].tolist() == [3.0, 90.0]
    config = load_settings(environ={}).monitor
    assert "ood_score" in config.numeric_columns
    assert "ood_score" in monitored(config, reference, reference).numeric_columns
    old = build_reference(images, predictions.drop(columns=["ood_score", "in_distribution"]),
                          ["Normal", "COVID"], 0.5)  # fmt: skip
    assert "ood_score" not in old and old["label"].tolist() == ["COVID", "Normal"]
    current = reference.assign(ood_score=np.nan)
    assert "ood_score" not in monitored(config, old, reference).numeric_columns
    assert "ood_score" not in monitored(config, reference, current).numeric_columns
