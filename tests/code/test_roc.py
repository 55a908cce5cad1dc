"""The ROC curve of a model's test split: its points, and the figure beside the
confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.train.reporting import plot_roc, roc_points

# four images whose ROC is known by hand: one COVID (0.35) ranks below one Normal (0.4)
Y = np.array([0, 0, 1, 1])
P = np.array([0.1, 0.4, 0.35, 0.8])


def test_points_run_from_nothing_to_everything_called_covid() -> None:
    points = roc_points(Y, P)
    assert [(p["fpr"], p["tpr"]) for p in points] == [
        (0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)
    ]  # fmt: skip
    assert [p["threshold"] for p in points] == [None, 0.8, 0.4, 0.35, 0.1]
    fpr, tpr = [p["fpr"] for p in points], [p["tpr"] for p in points]
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)  # the AUC the legend shows


def test_one_class_has_no_curve(tmp_path: Path) -> None:
    assert roc_points(np.ones(5), np.linspace(0, 1, 5)) == []
    png = plot_roc("lstm", np.ones(5), np.linspace(0, 1, 5), 0.5, tmp_path / "one.png")
    assert Image.open(png).format == "PNG"


def test_the_figure_is_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    prob = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    png = plot_roc("resnet50_lstm", y, prob, 0.5, tmp_path / "resnet50_lstm_roc.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (450, 450)
    assert png.stat().st_size > 10_000
