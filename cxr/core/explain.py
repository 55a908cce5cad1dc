"""Occlusion-sensitivity explanations (Zeiler & Fergus 2014) of one preprocessed image.

A square patch filled with the image's mean is slid over the model input on a
``grid`` x ``grid`` lattice (patch side ``2 / (grid + 1)`` of the image side, stride half
a patch, so neighbouring patches overlap by half and together cover every pixel). Each
patch scores the drop of the model's confidence in its predicted class when it is hidden:
the drop of P(COVID) for a COVID verdict (P(COVID) >= cut-off), its rise for a Normal
one; patches whose hiding makes the model surer score zero. The heat map holds each score
at its patch's centre and interpolates bilinearly between centres.

No gradients: the occluded copies are ordinary inputs for the model's compiled batched
predict (:class:`cxr.core.inference.Predictor`, or the service's model runner), so an
explanation is computed the same way on the TensorFlow and the JAX backend. Forward
passes per image: ``grid**2 + 1`` (the image itself first), at most
``MAX_GRID**2 + 1 = 65``.

The service imports this module: numpy and Pillow only.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

GRID = 8  # patches per side: 64 occluded copies + the image = 65 forward passes
MAX_GRID = 8
BORDER_BAND = 0.10  # the outer 10% of the side, on each of the four sides
# Share of the image's area in that band: the border share of a heat map spread evenly.
UNIFORM_BORDER_SHARE = 1.0 - (1.0 - 2 * BORDER_BAND) ** 2  # 0.36
OVERLAY_ALPHA = 0.6  # opacity of the colour where the heat is highest
# Colour ramp of the overlay (low -> high heat): blue, cyan, yellow, red.
_RAMP = np.array([[0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]], np.float32)


@dataclass(frozen=True)
class Explanation:
    """The heat map of one image and the answer it explains."""

    heat: np.ndarray  # (S, S) float32 >= 0: drop of the predicted class's probability
    covid_probability: float  # P(COVID) of the unoccluded image
    predicted_covid: bool  # P(COVID) >= cut-off
    passes: int  # forward passes spent (occluded copies + the image)

    @property
    def border_share(self) -> float | None:
        """Share of the heat in the outer :data:`BORDER_BAND` of each side (None when
        hiding no patch lowered the model's confidence)."""
        return border_share(self.heat)


def passes(grid: int = GRID) -> int:
    """Forward passes one explanation costs."""
    return grid * grid + 1


def patch_boxes(size: int, grid: int = GRID) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of each patch on a ``size`` x ``size`` input, row by row."""
    if not 1 <= grid <= MAX_GRID:
        raise ValueError(f"grid must be 1..{MAX_GRID} (at most {passes(MAX_GRID)} passes)")
    if size < grid + 1:
        raise ValueError(f"a {size}-pixel input is too small for a {grid}x{grid} grid")
    patch = max(1, round(2 * size / (grid + 1)))
    starts = np.rint(np.linspace(0, size - patch, grid)).astype(int)
    return [(int(t), int(s), int(t) + patch, int(s) + patch) for t in starts for s in starts]


def occluded_inputs(x: np.ndarray, grid: int = GRID) -> np.ndarray:
    """The model input ``x`` (S, S, C) followed by its ``grid**2`` occluded copies, each
    with one patch set to the image's mean: (grid**2 + 1, S, S, C) float32."""
    x = np.asarray(x, np.float32)
    if x.ndim != 3 or x.shape[0] != x.shape[1]:
        raise ValueError(f"expected one square model input (S, S, C), got shape {x.shape}")
    boxes = patch_boxes(x.shape[0], grid)
    batch = np.repeat(x[None], len(boxes) + 1, axis=0)
    fill = x.mean(axis=(0, 1))
    for i, (top, left, bottom, right) in enumerate(boxes, start=1):
        batch[i, top:bottom, left:right] = fill
    return batch


def heat_from_probabilities(
    probabilities: np.ndarray, size: int, cutoff: float, grid: int = GRID
) -> Explanation:
    """The explanation from P(COVID) of :func:`occluded_inputs`' batch (image first)."""
    probabilities = np.asarray(probabilities, np.float64).reshape(-1)
    boxes = patch_boxes(size, grid)
    if len(probabilities) != len(boxes) + 1:
        raise ValueError(f"expected {len(boxes) + 1} probabilities, got {len(probabilities)}")
    base = float(probabilities[0])
    covid = base >= cutoff
    drops = (base - probabilities[1:]) if covid else (probabilities[1:] - base)
    # one value per patch, at the patch's centre; between centres, bilinear interpolation
    # (held constant beyond the outer centres): a smooth map without seams at patch edges
    centres = np.array([(top + bottom) / 2 for top, _, bottom, _ in boxes[::grid]])
    pixels = np.arange(size) + 0.5
    weights = np.stack([np.interp(pixels, centres, column) for column in np.eye(grid)], axis=1)
    heat = (weights @ np.maximum(drops, 0.0).reshape(grid, grid) @ weights.T).astype(np.float32)
    return Explanation(heat, base, bool(covid), len(probabilities))


def explain(
    x: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    cutoff: float,
    grid: int = GRID,
) -> Explanation:
    """Occlusion heat map of the model input ``x`` (S, S, C); ``predict`` maps a batch to
    P(COVID) per image (a :class:`~cxr.core.inference.Predictor`). Costs
    ``grid**2 + 1`` forward passes (65 at most)."""
    batch = occluded_inputs(x, grid)
    return heat_from_probabilities(predict(batch), batch.shape[1], cutoff, grid)


def border_share(heat: np.ndarray, band: float = BORDER_BAND) -> float | None:
    """Share of the heat in the outer ``band`` of the side on each of the four sides
    (:data:`UNIFORM_BORDER_SHARE` for heat spread evenly); None for a map without heat."""
    heat = np.asarray(heat, np.float64)
    total = float(heat.sum())
    if total <= 0:
        return None
    height, width = heat.shape
    dy, dx = round(band * height), round(band * width)
    inner = float(heat[dy : height - dy, dx : width - dx].sum())
    return (total - inner) / total


def colour_map(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (H, W) -> RGB float32 (H, W, 3) on the blue-cyan-yellow-red ramp."""
    position = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.minimum(position.astype(int), len(_RAMP) - 2)
    weight = (position - low)[..., None]
    return _RAMP[low] * (1 - weight) + _RAMP[low + 1] * weight


def overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The heat map, scaled to its maximum and resized to ``gray`` (H, W; uint8, or float
    in [0, 1]), blended over it: RGB uint8 (H, W, 3). The colour's opacity grows with the
    heat, so regions that did not drive the score show the radiograph unchanged."""
    gray = np.asarray(gray)
    base = gray.astype(np.float32) * (1.0 if gray.dtype == np.uint8 else 255.0)
    height, width = base.shape
    resized = Image.fromarray(np.asarray(heat, np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    scaled = np.clip(np.asarray(resized, np.float32), 0.0, None)
    peak = float(scaled.max())
    scaled = scaled / peak if peak > 0 else scaled
    weight = (alpha * scaled)[..., None]
    blended = base[..., None] * (1 - weight) + colour_map(scaled) * weight
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """An RGB uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_png(x: np.ndarray, explanation: Explanation) -> bytes:
    """PNG of the explanation blended over the model input ``x`` (S, S, C) it explains:
    an S x S image."""
    return encode_png(overlay(np.asarray(x)[..., 0], explanation.heat))
