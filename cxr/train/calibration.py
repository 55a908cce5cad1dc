"""Calibration of P(COVID): temperature scaling fitted on the validation split, expected
calibration error (ECE) and the reliability table behind the diagram.

ECE here is that of the positive-class probability: the test images are put in
``ECE_BINS`` equal-width bins of P(COVID) (the last one closed at 1), and ECE is the
image-weighted mean of |share of COVID images - mean P(COVID)| over the bins.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

from cxr.core.calibration import NO_TEMPERATURE, calibrate

ECE_BINS = 10
TEMPERATURE_BOUNDS = (0.05, 20.0)  # the fit stays inside; 1/T sharpens at most 20-fold


def negative_log_likelihood(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy of labels (1 = COVID) under P(COVID)."""
    y = np.asarray(y_true, np.float64)
    p = np.clip(np.asarray(probabilities, np.float64), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def fit_temperature(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature that minimises the NLL of ``calibrate(probabilities, T)`` on the
    labels (bounded search over log T in ``TEMPERATURE_BOUNDS``). Labels of one class
    only say nothing about how confident the model should be: 1.0 then."""
    y = np.asarray(y_true).astype(int)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return NO_TEMPERATURE
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(y, calibrate(probabilities, math.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(found.x))


def reliability_bins(
    y_true: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float | int | None]]:
    """Per equal-width P(COVID) bin: its edges, image count, mean P(COVID) and observed
    share of COVID images (None for an empty bin)."""
    y = np.asarray(y_true, np.float64)
    p = np.asarray(probabilities, np.float64)
    index = np.minimum((p * bins).astype(int), bins - 1)
    rows: list[dict[str, float | int | None]] = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        rows.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "n": n,
                "mean_probability": float(p[inside].mean()) if n else None,
                "covid_share": float(y[inside].mean()) if n else None,
            }
        )
    return rows


def expected_calibration_error(
    y_true: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Image-weighted mean |share of COVID - mean P(COVID)| over equal-width bins."""
    total = len(np.asarray(y_true))
    if total == 0:
        return 0.0
    return float(
        sum(
            row["n"] / total * abs(row["covid_share"] - row["mean_probability"])
            for row in reliability_bins(y_true, probabilities, bins)
            if row["n"]
        )
    )


def calibration_summary(
    temperature: float,
    fitted_on: str,
    val_y: np.ndarray,
    val_raw: np.ndarray,
    test_y: np.ndarray,
    test_raw: np.ndarray,
) -> dict[str, object]:
    """One model's calibration entry in ``metrics.json``: the temperature, where it was
    fitted, and validation NLL and ECE / test ECE before and after scaling."""

    def rounded(value: float) -> float:
        return round(value, 6)

    val_cal, test_cal = calibrate(val_raw, temperature), calibrate(test_raw, temperature)
    return {
        "temperature": temperature,
        "fitted_on": fitted_on,
        "ece_bins": ECE_BINS,
        "val_nll_before": rounded(negative_log_likelihood(val_y, val_raw)),
        "val_nll_after": rounded(negative_log_likelihood(val_y, val_cal)),
        "val_ece_before": rounded(expected_calibration_error(val_y, val_raw)),
        "val_ece_after": rounded(expected_calibration_error(val_y, val_cal)),
        "test_ece_before": rounded(expected_calibration_error(test_y, test_raw)),
        "test_ece_after": rounded(expected_calibration_error(test_y, test_cal)),
    }
