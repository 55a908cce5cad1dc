"""The out-of-distribution detector: scoring, threshold, feature taps, compiled path."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.covariance import LedoitWolf

from cxr.core.config import load_settings
from cxr.core.errors import DataInputError
from cxr.core.inference import Predictor
from cxr.core.ood import (
    COLOUR_TOLERANCE,
    OUT_OF_DISTRIBUTION,
    default_layers,
    load_detector,
    verdicts,
)
from cxr.monitor.reference import build_reference, monitored
from cxr.train.models import build_network
from cxr.train.ood import choose_threshold, fit_detector, refusal_summary


@pytest.fixture(scope="module")
def lstm_model():
    settings = load_settings("demo", environ={})
    return build_network("lstm", 32, settings.model)


def _input_statistics(x: np.ndarray) -> np.ndarray:
    """What the ``input_statistics`` tap computes, in numpy."""
    flat = x[..., 0].reshape(len(x), -1).astype(np.float64)
    bins = np.clip(np.floor(flat * 16), 0, 15).astype(int)
    shares = np.stack([(bins == b).mean(axis=1) for b in range(16)], axis=1)
    entropy = -(shares * np.log2(np.where(shares > 0, shares, 1))).sum(axis=1)
    return np.c_[flat.mean(1), flat.std(1), shares, entropy, (flat < 0.04).mean(1)]


def _mahalanobis(fitted: LedoitWolf, probe: np.ndarray) -> np.ndarray:
    centred = probe - fitted.location_
    return np.sqrt(np.einsum("nd,de,ne->n", centred, np.linalg.inv(fitted.covariance_), centred))


def test_score_is_the_largest_normalised_mahalanobis_distance(lstm_model, tmp_path) -> None:
    rng = np.random.default_rng(0)
    train, val = rng.random((60, 32, 32, 3), np.float32), rng.random((40, 32, 32, 3), np.float32)
    detector = fit_detector(lstm_model, train, val, keep_share=0.9)
    assert detector.layers == ["covid_probability", "input_statistics"]
    assert [(c.start, c.stop) for c in detector.components] == [(0, 64), (64, 84)]
    features = lstm_model.predict(train, verbose=0)  # checks the feature model below
    head = keras.Model(lstm_model.inputs, lstm_model.get_layer("dropout").output)
    direct = [np.asarray(head(train)), _input_statistics(train)]
    probe = np.concatenate([part[:5] for part in direct], axis=1)
    expected = [_mahalanobis(LedoitWolf().fit(part), part[:5]) for part in direct]
    for component, distance in zip(detector.components, expected, strict=True):
        np.testing.assert_allclose(component.raw(probe), distance, rtol=1e-4)
    # each component is scaled by its own validation threshold; the score is the largest
    val_direct = [np.asarray(head(val)), _input_statistics(val)]
    scales = [
        choose_threshold(_mahalanobis(LedoitWolf().fit(p), v), 0.9)
        for p, v in zip(direct, val_direct, strict=True)
    ]
    assert [c.scale for c in detector.components] == pytest.approx(scales, rel=1e-4)
    largest = np.max([d / s for d, s in zip(expected, scales, strict=True)], axis=0)
    np.testing.assert_allclose(detector.score(probe), largest, rtol=1e-4)
    # the compiled two-output path gives the single-output model's probabilities
    probabilities, train_features = Predictor(lstm_model, 8, detector.layers).outputs(train)
    np.testing.assert_allclose(probabilities, features.reshape(-1), atol=1e-6)
    np.testing.assert_allclose(train_features, np.concatenate(direct, axis=1), atol=1e-5)
    # saved and loaded, it scores the same (matrices stored in float32)
    loaded = load_detector(detector.save(tmp_path / "ood.npz"))
    assert loaded.layers == detector.layers and loaded.threshold == detector.threshold
    np.testing.assert_allclose(loaded.score(probe), detector.score(probe), rtol=1e-5)
    assert loaded.summary() == detector.summary()
    assert load_detector(tmp_path / "missing.npz") is None
    # verdicts: a colour image is out of distribution whatever its score
    scores, flags = verdicts(detector, probe, 5)
    kept = int(np.argmax(flags))  # an image the score alone keeps
    assert flags[kept] == 1.0
    coloured = np.zeros(5)
    coloured[kept] = COLOUR_TOLERANCE + 1
    again, colour_flags = verdicts(detector, probe, 5, coloured)
    np.testing.assert_array_equal(again, scores)
    assert colour_flags[kept] == 0.0
    others = np.arange(5) != kept
    np.testing.assert_array_equal(colour_flags[others], flags[others])


def test_a_first_version_detector_file_loads_and_a_newer_one_is_refused(tmp_path) -> None:
    rng = np.random.default_rng(4)
    train = rng.normal(size=(50, 6))
    fitted = LedoitWolf().fit(train)
    with open(tmp_path / "v1.npz", "wb") as handle:  # as the first version wrote it
        np.savez(
            handle, layers=np.array(["resnet50/conv2_block3_out"]), mean=fitted.location_,
            precision=fitted.precision_.astype(np.float32), threshold=np.float64(3.5),
            keep_share=np.float64(0.975),
        )  # fmt: skip
    old = load_detector(tmp_path / "v1.npz")
    assert old.layers == ["resnet50/conv2_block3_out"] and old.threshold == 3.5
    np.testing.assert_allclose(old.score(train[:4]), _mahalanobis(fitted, train[:4]), rtol=1e-5)
    with open(tmp_path / "v9.npz", "wb") as handle:
        np.savez(handle, version=np.int64(9), layers=np.array(["x"]), threshold=1.0,
                 keep_share=0.975)  # fmt: skip
    with pytest.raises(DataInputError, match="format 9 is newer"):
        load_detector(tmp_path / "v9.npz")


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
    assert default_layers(hybrid) == ["resnet50/conv2_block3_out", "input_statistics"]
    assert default_layers(build_network("resnet50", 32, config)) == default_layers(hybrid)
    x = np.random.default_rng(3).random((3, 32, 32, 3), np.float32)
    probabilities, both = Predictor(hybrid, 4, default_layers(hybrid)).outputs(x)
    assert both.shape == (3, 256 + 20)  # the second stage's 256 channels, the input's 20
    features, statistics = both[:, :256], both[:, 256:]
    np.testing.assert_allclose(statistics, _input_statistics(x), atol=1e-5)
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


def test_auroc_interval_brackets_the_auroc_and_is_one_where_the_scores_separate() -> None:
    from cxr.train.ood import auroc_interval

    rng = np.random.default_rng(0)
    assert auroc_interval(np.arange(10.0) + 20, np.arange(10.0), seed=0) == (1.0, 1.0, 1.0)
    auc, low, high = auroc_interval(rng.normal(1, 1, 200), rng.normal(0, 1, 200), seed=0)
    assert 0.6 < auc < 0.9 and low < auc < high
