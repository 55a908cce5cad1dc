"""Per-image statistics used by validation and (later) drift monitoring."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.core.image_stats import STAT_COLUMNS, image_statistics


def test_flat_image_has_no_spread_or_detail() -> None:
    stats = image_statistics(np.full((32, 32), 200, np.uint8))
    assert list(stats) == STAT_COLUMNS
    assert stats["mean_intensity"] == 200 and stats["std_intensity"] == 0
    assert stats["entropy"] == 0 and stats["sharpness"] == 0 and stats["dark_fraction"] == 0


def test_values_on_known_patterns() -> None:
    half = np.zeros((32, 32), np.uint8)
    half[:, 16:] = 255
    stats = image_statistics(half)
    assert stats["dark_fraction"] == 0.5 and stats["entropy"] == pytest.approx(1.0)
    checker = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)
    assert image_statistics(checker)["sharpness"] > 100 * max(
        image_statistics(half)["sharpness"], 1
    )
