"""Explanations of a run's test images: which to show, the grid figure, the border share.

Each training run explains a few test images of the gated model with
:func:`cxr.core.explain.explain` (occlusion sensitivity, ``passes(GRID)`` forward passes
each) and reports the mean share of the heat that lies in the image border, where
burned-in text, rulers and markers sit: a model that reads them (a known shortcut of COVID
radiograph classifiers) puts much more of its heat there than the
:data:`~cxr.core.explain.UNIFORM_BORDER_SHARE` of an evenly spread map.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from cxr.core.calibration import NO_TEMPERATURE, calibrate
from cxr.core.explain import (
    BORDER_BAND,
    GRID,
    UNIFORM_BORDER_SHARE,
    Explanation,
    explain,
    overlay,
    passes,
)
from cxr.core.inference import Predictor

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

N_EXAMPLES = 8


def select_examples(
    labels: np.ndarray, probabilities: np.ndarray, cutoff: float, n: int = N_EXAMPLES
) -> list[int]:
    """Indices of up to ``n`` test images taken in turn from the four groups (COVID right,
    Normal right, COVID wrong, Normal wrong), the most confident answers of each first;
    groups that run out leave their turns to the others."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    predicted = (probabilities >= cutoff).astype(int)
    confidence = np.where(predicted == 1, probabilities, 1 - probabilities)
    groups = []
    for correct in (True, False):
        for label in (1, 0):
            members = np.flatnonzero((labels == label) & ((predicted == labels) == correct))
            groups.append(list(members[np.argsort(-confidence[members], kind="stable")]))
    chosen: list[int] = []
    while len(chosen) < n and any(groups):
        for group in groups:
            if group and len(chosen) < n:
                chosen.append(int(group.pop(0)))
    return chosen


def plot_explanations(
    x: np.ndarray,
    labels: np.ndarray,
    indices: list[int],
    explanations: list[Explanation],
    classes: list[str],
    title: str,
    path: Path,
) -> Path:
    """A grid of heat-map overlays (4 per row), each titled with the true and predicted
    class, P(COVID) and the border share."""
    columns = min(4, max(1, len(indices)))
    rows = max(1, -(-len(indices) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.3 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index, explanation in zip(axes.ravel(), indices, explanations, strict=False):
        ax.imshow(overlay(x[index][..., 0], explanation.heat))
        truth, guess = classes[int(labels[index])], classes[int(explanation.predicted_covid)]
        share = explanation.border_share
        ax.set_title(
            f"true {truth}, predicted {guess}\nP(COVID) {explanation.covid_probability:.2f}, "
            f"border {'-' if share is None else f'{share:.2f}'}",
            fontsize=9, color="black" if truth == guess else "firebrick",
        )  # fmt: skip
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def explain_test_images(
    model: object,
    x: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    cutoff: float,
    classes: list[str],
    title: str,
    path: Path,
    temperature: float = NO_TEMPERATURE,
    n: int = N_EXAMPLES,
) -> dict[str, object]:
    """Explain up to ``n`` test images (:func:`select_examples`) through the model's
    compiled predict, draw them to ``path`` and return the summary for ``metrics.json``.
    ``probabilities`` and ``cutoff`` are on the calibrated scale of ``temperature``, and so
    are the explained probabilities."""
    indices = select_examples(labels, probabilities, cutoff, n)
    predictor = Predictor(model, 32)

    def predict(batch: np.ndarray) -> np.ndarray:
        return calibrate(predictor(batch), temperature)

    explanations = [explain(x[i], predict, cutoff, GRID) for i in indices]
    plot_explanations(x, labels, indices, explanations, classes, title, path)
    shares = [e.border_share for e in explanations]
    measured = [s for s in shares if s is not None]
    return {
        "method": "occlusion",
        "grid": GRID,
        "passes_per_image": passes(GRID),
        "images": len(indices),
        "border_band": BORDER_BAND,
        "border_heat_share_mean": round(float(np.mean(measured)), 4) if measured else None,
        "uniform_border_share": round(UNIFORM_BORDER_SHARE, 4),
        "per_image": [
            {
                "index": i,
                "label": classes[int(labels[i])],
                "predicted": classes[int(e.predicted_covid)],
                "covid_probability": round(e.covid_probability, 4),
                "border_heat_share": None if s is None else round(s, 4),
            }
            for i, e, s in zip(indices, explanations, shares, strict=True)
        ],
    }
