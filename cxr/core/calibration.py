"""Temperature scaling of the model's P(COVID): ``sigmoid(logit(p) / T)``.

The temperature is fitted on the validation split (``cxr.train.calibration``) and ships
with the packaged model (``serving.json``); ``T = 1`` (models packaged before it) leaves
the probability unchanged. Imported by the service: numpy only.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-7  # probabilities are kept this far from 0 and 1 before taking the logit
NO_TEMPERATURE = 1.0  # models packaged (and runs written) before calibration


def logit(probabilities: np.ndarray | float) -> np.ndarray:
    """log(p / (1 - p)) in float64, with ``p`` clipped to [EPSILON, 1 - EPSILON]."""
    p = np.clip(np.asarray(probabilities, np.float64), EPSILON, 1 - EPSILON)
    return np.log(p) - np.log1p(-p)


def calibrate(probabilities: np.ndarray | float, temperature: float) -> np.ndarray:
    """The calibrated P(COVID) of raw sigmoid probabilities: ``sigmoid(logit(p) / T)``
    (float64, same shape; ``T = 1`` returns them unchanged)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if temperature == NO_TEMPERATURE:
        return np.asarray(probabilities, np.float64)
    scaled = logit(probabilities) / temperature
    return np.exp(-np.logaddexp(0.0, -scaled))  # sigmoid without overflow
