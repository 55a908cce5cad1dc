"""Out-of-distribution check of a packaged model: is an image like the training population?

The detector reads the model's own features (for the ResNet50 models the backbone's
second-stage feature map averaged over space, for the LSTM baseline the input of the
final Dense: :func:`default_layers`), which come out of
the same compiled forward pass as the probability (:class:`cxr.core.inference.Predictor`).
Its score is the Mahalanobis distance of those features to the training split's mean,
under a shrunk (Ledoit-Wolf) covariance; an image is in distribution when its score is
at most a threshold chosen on the validation split (``cxr.train.ood`` fits it). The
detector ships beside the model in the BentoML store as ``ood.npz``.

Imported by the service: numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

DETECTOR_FILE = "ood.npz"
OUT_OF_DISTRIBUTION = "out_of_distribution"  # the label of an image the detector refuses
HEAD_LAYER = "covid_probability"  # the final Dense: its input is the penultimate feature
BACKBONE_LAYER = "resnet50"
BACKBONE_TAP = "conv2_block3_out"  # the output of the ResNet50's second stage


@dataclass
class OODDetector:
    """Mahalanobis distance to the training features, and the threshold that keeps the
    configured share of validation images."""

    layers: list[str]  # features: the inputs of these layers, averaged over space/steps
    mean: np.ndarray  # (d,)
    precision: np.ndarray  # (d, d) inverse of the shrunk covariance
    threshold: float  # in distribution when score <= threshold
    keep_share: float  # share of validation images the threshold keeps (configured)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``features`` (n, d); higher = further."""
        centred = np.asarray(features, np.float64) - self.mean
        squared = ((centred @ self.precision) * centred).sum(axis=1)
        return np.sqrt(np.maximum(squared, 0.0))

    def in_distribution(self, scores: np.ndarray) -> np.ndarray:
        """True where a score is within the threshold."""
        return np.asarray(scores) <= self.threshold

    def save(self, path: Path) -> Path:
        """Write the detector to ``path`` (an ``.npz`` file)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:  # np.savez would append .npz to other names
            np.savez(
                handle,
                layers=np.array(self.layers),
                mean=self.mean.astype(np.float64),
                precision=self.precision.astype(np.float32),  # half the size; scores agree to 1e-6
                threshold=np.float64(self.threshold),
                keep_share=np.float64(self.keep_share),
            )
        return Path(path)

    def summary(self) -> dict[str, Any]:
        """What ``/info`` and the run report say about the detector."""
        return {
            "method": "mahalanobis_ledoit_wolf",
            "layers": list(self.layers),
            "feature_dim": int(self.mean.shape[0]),
            "threshold": float(self.threshold),
            "keep_share": float(self.keep_share),
        }


def load_detector(path: Path) -> OODDetector | None:
    """The detector saved at ``path``, or None where there is none (models packaged
    before the check existed)."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path) as data:
        return OODDetector(
            layers=[str(name) for name in data["layers"]],
            mean=data["mean"].astype(np.float64),
            precision=data["precision"].astype(np.float64),
            threshold=float(data["threshold"]),
            keep_share=float(data["keep_share"]),
        )


def default_layers(model: keras.Model) -> list[str]:
    """The feature taps of one of the three networks: for the ResNet50 models the output
    of the backbone's second stage (``conv2_block3_out``, averaged over space), for the
    LSTM baseline the input of the final Dense. On the demo hybrid trained on real
    images, the early stage separated Tuberculosis films and non-radiographs from unseen
    COVID/Normal films far better than the last stage or the penultimate layer
    (AUROC 0.85 and 0.99 against 0.53 and 0.57: benchmarks/ood_detection.py)."""
    names = [layer.name for layer in model.layers]
    if BACKBONE_LAYER in names:
        return [f"{BACKBONE_LAYER}/{BACKBONE_TAP}"]
    return [HEAD_LAYER]


def verdicts(
    detector: OODDetector | None, features: np.ndarray | None, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, in-distribution flags as 1.0/0.0) of ``n`` images; NaN for both without a
    detector."""
    if detector is None or features is None:
        return np.full(n, np.nan), np.full(n, np.nan)
    scores = detector.score(features)
    return scores, detector.in_distribution(scores).astype(np.float64)


def as_answer(score: float) -> float | None:
    """A score as JSON answers it: None for NaN (no detector)."""
    return None if math.isnan(score) else float(score)
