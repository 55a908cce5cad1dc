"""Temperature scaling, expected calibration error and the reliability diagram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxr.core.calibration import calibrate, logit
from cxr.train.calibration import (
    TEMPERATURE_BOUNDS,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from cxr.train.reporting import plot_reliability


def _overconfident(temperature: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z) and a model that answers sigmoid(z * temperature):
    ``temperature`` is the one that calibrates it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return y, 1 / (1 + np.exp(-z * temperature))


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_the_fit_recovers_a_known_temperature(true_temperature: float) -> None:
    y, raw = _overconfident(true_temperature, 20_000, seed=int(true_temperature * 10))
    fitted = fit_temperature(y, raw)
    assert fitted == pytest.approx(true_temperature, rel=0.06)
    calibrated = calibrate(raw, fitted)
    assert negative_log_likelihood(y, calibrated) <= negative_log_likelihood(y, raw) + 1e-9
    if true_temperature != 1.0:  # miscalibrated before, calibrated after
        assert expected_calibration_error(y, raw) > 0.04
        assert expected_calibration_error(y, calibrated) < 0.02


def test_temperature_one_leaves_probabilities_unchanged() -> None:
    p = np.array([0.0, 1e-9, 0.2, 0.5, 0.93, 1.0], np.float32)
    np.testing.assert_array_equal(calibrate(p, 1.0), p.astype(np.float64))
    assert float(calibrate(0.37, 1.0)) == pytest.approx(0.37, abs=1e-12)
    assert calibrate(p, 1.0).dtype == np.float64


def test_scaling_keeps_order_and_one_half_and_is_undone_by_the_inverse() -> None:
    p = np.linspace(0.01, 0.99, 50)
    for temperature in (0.3, 2.0, 7.0):
        scaled = calibrate(p, temperature)
        assert np.all(np.diff(scaled) > 0)  # monotone: ROC AUC does not change
        assert float(calibrate(0.5, temperature)) == pytest.approx(0.5)
        np.testing.assert_allclose(calibrate(scaled, 1 / temperature), p, rtol=1e-9)
    assert np.all(calibrate(p[p > 0.5], 2.0) < p[p > 0.5])  # T > 1 softens
    assert np.all(calibrate(p[p > 0.5], 0.5) > p[p > 0.5])  # T < 1 sharpens
    extremes = calibrate(np.array([0.0, 1.0]), 0.05)  # clipped: finite, ordered
    assert np.all(np.isfinite(extremes)) and 0 <= extremes[0] < extremes[1] <= 1
    assert np.isfinite(logit(np.array([0.0, 1.0]))).all()
    with pytest.raises(ValueError, match="positive"):
        calibrate(p, 0.0)


def test_labels_of_one_class_or_none_leave_the_temperature_at_one() -> None:
    assert fit_temperature(np.ones(10), np.full(10, 0.9)) == 1.0
    assert fit_temperature(np.array([]), np.array([])) == 1.0


def test_a_separable_validation_split_stops_at_the_bound() -> None:
    y = np.array([0, 0, 1, 1])
    fitted = fit_temperature(y, np.array([0.3, 0.4, 0.6, 0.7]))
    assert fitted == pytest.approx(TEMPERATURE_BOUNDS[0], rel=1e-3)  # sharpen as far as allowed


def test_expected_calibration_error_of_known_cases() -> None:
    # one image in each of bins 0, 1, 8, 9: |0 - .05|, |0 - .15|, |1 - .85|, |1 - .95|
    y, p = np.array([0, 0, 1, 1]), np.array([0.05, 0.15, 0.85, 0.95])
    assert expected_calibration_error(y, p) == pytest.approx(0.25 * (0.05 + 0.15 + 0.15 + 0.05))
    # all in one bin at 0.7, half of them COVID
    assert expected_calibration_error(np.array([0, 1, 0, 1]), np.full(4, 0.7)) == pytest.approx(0.2)
    # perfectly calibrated within each bin; P(COVID) = 1 falls into the last bin
    y = np.array([1, 1, 1, 0, 0])
    assert expected_calibration_error(y, np.array([1.0, 1.0, 1.0, 0.0, 0.0])) == 0.0
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0
    table = reliability_bins(np.array([1, 0]), np.array([1.0, 0.55]))
    assert [row["n"] for row in table] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert table[9]["covid_share"] == 1.0 and table[0]["mean_probability"] is None
    assert expected_calibration_error(y, np.full(5, 0.6), bins=15) == pytest.approx(0.0)


def test_the_summary_and_the_reliability_diagram(tmp_path: Path) -> None:
    y, raw = _overconfident(3.0, 400, seed=1)
    temperature = fit_temperature(y[:200], raw[:200])
    summary = calibration_summary(temperature, "validation", y[:200], raw[:200], y[200:], raw[200:])
    assert summary["temperature"] == temperature and summary["ece_bins"] == 10
    assert summary["val_nll_after"] <= summary["val_nll_before"]
    assert summary["test_ece_after"] < summary["test_ece_before"]
    path = plot_reliability(
        "lstm", y[200:], raw[200:], calibrate(raw[200:], temperature), summary,
        tmp_path / "lstm_reliability.png",
    )  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
