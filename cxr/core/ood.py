"""Out-of-distribution check of a packaged model: is an image like the training population?

The detector reads the model's own features (:func:`default_layers`), which come out of
the same compiled forward pass as the probability (:class:`cxr.core.inference.Predictor`).
It combines a few scores, each over its own slice of those features (a
:class:`Component`): the Mahalanobis distance to the nearest of its centres (one: the
training mean; one per class: Lee et al. 2018) under a shrunk (Ledoit-Wolf) covariance,
or the distance to the k-th nearest L2-normalised training feature (Sun et al. 2022).
Each score is divided by its own validation threshold; the detector's score is the
largest of them, and an image is in distribution when that is at most the detector's
threshold, chosen on the validation split (``cxr.train.ood`` fits it). An image in colour
(:data:`COLOUR_TOLERANCE`) is out of distribution whatever its score: radiographs are
grey, and the training films all are. The detector ships
beside the model in the BentoML store as ``ood.npz``; a file of the first version (one
Mahalanobis distance, unnormalised) still loads and scores as it did.

Imported by the service: numpy only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cxr.core.errors import DataInputError
from cxr.core.inference import INPUT_STATISTICS

if TYPE_CHECKING:
    import keras

DETECTOR_FILE = "ood.npz"
FORMAT_VERSION = 2  # 1: one Mahalanobis distance (no "version" entry in the file)
OUT_OF_DISTRIBUTION = "out_of_distribution"  # the label of an image the detector refuses
HEAD_LAYER = "covid_probability"  # the final Dense: its input is the penultimate feature
BACKBONE_LAYER = "resnet50"
BACKBONE_TAP = "conv2_block3_out"  # the output of the ResNet50's second stage
# mean spread between an image's colour channels (0-255, cxr.core.preprocessing's
# colourfulness) above which it is not a radiograph; grey films saved as RGB or as colour
# JPEG measure 0, the colour photographs of benchmarks/ood_detection.py 8-114
COLOUR_TOLERANCE = 4.0

Kind = Literal["mahalanobis", "knn"]


@dataclass
class Component:
    """One score over ``features[:, start:stop]``, divided by ``scale`` (its own
    validation threshold, so that 1.0 means the same for every component)."""

    name: str
    kind: Kind
    start: int
    stop: int
    centres: np.ndarray  # mahalanobis: (m, d) means; knn: (n, d) unit-norm training rows
    precision: np.ndarray | None = None  # mahalanobis: (d, d) inverse shrunk covariance
    k: int = 1  # knn: the k-th nearest neighbour
    scale: float = 1.0

    def raw(self, features: np.ndarray) -> np.ndarray:
        """The unnormalised score of each row of ``features`` (n, D); higher = further."""
        part = np.asarray(features, np.float64)[:, self.start : self.stop]
        if self.kind == "mahalanobis":
            squared = np.min(
                [((part - c) @ self.precision * (part - c)).sum(axis=1) for c in self.centres],
                axis=0,
            )
            return np.sqrt(np.maximum(squared, 0.0))
        unit = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
        distances = np.sqrt(np.maximum(2.0 - 2.0 * unit @ self.centres.T, 0.0))
        return np.partition(distances, self.k - 1, axis=1)[:, self.k - 1]

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.raw(features) / self.scale

    def describe(self) -> str:
        what = (
            f"k-NN (k={self.k}, {len(self.centres)} training rows)"
            if self.kind == "knn"
            else f"Mahalanobis to the nearest of {len(self.centres)} mean(s)"
        )
        return f"{self.name}: {what} over features {self.start}:{self.stop}"


@dataclass
class OODDetector:
    """The largest of its components' normalised scores, and the threshold that keeps the
    configured share of validation images."""

    layers: list[str]  # the Predictor's feature taps (see cxr.core.inference)
    components: list[Component] = field(default_factory=list)
    threshold: float = math.inf  # in distribution when score <= threshold
    keep_share: float = 0.975  # share of validation images the threshold keeps (configured)

    @property
    def feature_dim(self) -> int:
        return max(c.stop for c in self.components)

    def component_scores(self, features: np.ndarray) -> np.ndarray:
        """(n, components) normalised scores."""
        return np.stack([c.score(features) for c in self.components], axis=1)

    def score(self, features: np.ndarray) -> np.ndarray:
        """The detector's score of each row of ``features`` (n, d); higher = further."""
        return self.component_scores(features).max(axis=1)

    def in_distribution(self, scores: np.ndarray) -> np.ndarray:
        """True where a score is within the threshold."""
        return np.asarray(scores) <= self.threshold

    def save(self, path: Path) -> Path:
        """Write the detector to ``path`` (an ``.npz`` file)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        described = []
        for i, c in enumerate(self.components):
            arrays[f"c{i}_centres"] = c.centres.astype(np.float32)
            if c.precision is not None:  # float32: half the size; scores agree to 1e-5
                arrays[f"c{i}_precision"] = c.precision.astype(np.float32)
            described.append(
                {"name": c.name, "kind": c.kind, "start": c.start, "stop": c.stop,
                 "k": c.k, "scale": c.scale}
            )  # fmt: skip
        with open(path, "wb") as handle:  # np.savez would append .npz to other names
            np.savez(
                handle,
                version=np.int64(FORMAT_VERSION),
                layers=np.array(self.layers),
                components=np.array(json.dumps(described)),
                threshold=np.float64(self.threshold),
                keep_share=np.float64(self.keep_share),
                **arrays,
            )
        return Path(path)

    def summary(self) -> dict[str, Any]:
        """What ``/info`` and the run report say about the detector."""
        return {
            "method": "max_of_normalised_scores",
            "components": [c.describe() for c in self.components],
            "layers": list(self.layers),
            "feature_dim": int(self.feature_dim),
            "threshold": float(self.threshold),
            "keep_share": float(self.keep_share),
        }


def load_detector(path: Path) -> OODDetector | None:
    """The detector saved at ``path``, or None where there is none (models packaged
    before the check existed). A first-version file (one Mahalanobis distance) loads as
    one component with its own threshold; a file of a newer version than this code
    reads is refused."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path) as data:
        version = int(data["version"]) if "version" in data.files else 1
        layers = [str(name) for name in data["layers"]]
        threshold, keep = float(data["threshold"]), float(data["keep_share"])
        if version == 1:
            mean = data["mean"].astype(np.float64)
            only = Component(
                name="mahalanobis", kind="mahalanobis", start=0, stop=int(mean.shape[0]),
                centres=mean[None], precision=data["precision"].astype(np.float64),
            )  # fmt: skip
            return OODDetector(layers, [only], threshold, keep)
        if version != FORMAT_VERSION:
            raise DataInputError(
                f"{path}: out-of-distribution detector format {version} is newer than this "
                f"version of cxr reads ({FORMAT_VERSION}); upgrade cxr or repackage the model"
            )
        components = []
        for i, c in enumerate(json.loads(str(data["components"]))):
            precision = data[f"c{i}_precision"] if f"c{i}_precision" in data.files else None
            components.append(
                Component(
                    name=c["name"], kind=c["kind"], start=int(c["start"]), stop=int(c["stop"]),
                    centres=data[f"c{i}_centres"].astype(np.float64),
                    precision=None if precision is None else precision.astype(np.float64),
                    k=int(c["k"]), scale=float(c["scale"]),
                )
            )  # fmt: skip
        return OODDetector(layers, components, threshold, keep)


def default_layers(model: keras.Model) -> list[str]:
    """The feature taps of one of the three networks, each scored by its own component:
    for the ResNet50 models the output of the backbone's second stage
    (``conv2_block3_out``, averaged over space), for the LSTM baseline the input of the
    final Dense; for all three, the intensity statistics of the model input
    (``input_statistics``). On the demo hybrid trained on real images, the early stage
    separated Tuberculosis films and non-radiographs from unseen COVID/Normal films far
    better than the last stage or the penultimate layer (AUROC 0.85 and 0.99 against
    0.53 and 0.57), and the input statistics' own score lifted the Tuberculosis AUROC to
    0.90 (benchmarks/ood_detection.py, research/ood_variants.py)."""
    names = [layer.name for layer in model.layers]
    first = f"{BACKBONE_LAYER}/{BACKBONE_TAP}" if BACKBONE_LAYER in names else HEAD_LAYER
    return [first, INPUT_STATISTICS]


def in_colour(colour: np.ndarray | float) -> np.ndarray:
    """True where an image's colourfulness says it is not a grey radiograph."""
    return np.asarray(colour, np.float64) > COLOUR_TOLERANCE


def refuse_colour(flags: np.ndarray | float, colour: np.ndarray | float) -> np.ndarray:
    """In-distribution flags (1.0/0.0; NaN without a detector) with every colour image's
    set to 0.0: a colour image is out of distribution whatever its score."""
    flags = np.array(flags, np.float64)
    flags[(flags == 1.0) & in_colour(colour)] = 0.0
    return flags


def verdicts(
    detector: OODDetector | None,
    features: np.ndarray | None,
    n: int,
    colour: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, in-distribution flags as 1.0/0.0) of ``n`` images; NaN for both without a
    detector. ``colour`` (each image's colourfulness, where known): see
    :func:`refuse_colour`."""
    if detector is None or features is None:
        return np.full(n, np.nan), np.full(n, np.nan)
    scores = detector.score(features)
    flags = detector.in_distribution(scores).astype(np.float64)
    return scores, flags if colour is None else refuse_colour(flags, colour)


def as_answer(score: float) -> float | None:
    """A score as JSON answers it: None for NaN (no detector)."""
    return None if math.isnan(score) else float(score)
