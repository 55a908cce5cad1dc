"""Per-image statistics, computed the same way for the training data (ingestion, the
monitoring reference) and for every served image (the prediction log)."""

from __future__ import annotations

import numpy as np

STAT_COLUMNS = ["mean_intensity", "std_intensity", "entropy", "sharpness", "dark_fraction"]


def image_statistics(gray: np.ndarray) -> dict[str, float]:
    """Intensity mean/std, histogram entropy (bits), Laplacian variance, share of black."""
    pixels = gray.astype(np.float32)
    counts = np.bincount(gray.reshape(-1), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    laplacian = (
        pixels[:-2, 1:-1] + pixels[2:, 1:-1] + pixels[1:-1, :-2] + pixels[1:-1, 2:]
        - 4.0 * pixels[1:-1, 1:-1]
    )  # fmt: skip
    return {
        "mean_intensity": float(pixels.mean()),
        "std_intensity": float(pixels.std()),
        "entropy": float(-(p * np.log2(p)).sum()),
        "sharpness": float(laplacian.var()) if laplacian.size else 0.0,
        "dark_fraction": float((gray < 10).mean()),
    }
