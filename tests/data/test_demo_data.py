"""The synthetic demo dataset: release layout, 8-bit grayscale 299x299, labelled synthetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cxr.data.demo_data import is_synthetic, write_demo_dataset


def test_layout_format_and_marker(tmp_path: Path) -> None:
    root = write_demo_dataset(tmp_path, per_class=3, seed=1)
    assert root.name == "COVID-19_Radiography_Dataset"
    for label in ("COVID", "Normal"):
        names = sorted(p.name for p in (root / label / "images").iterdir())
        assert names == [f"{label}-{n}.png" for n in (1, 2, 3)]
        with Image.open(root / label / "images" / f"{label}-1.png") as image:
            assert image.mode == "L" and image.size == (299, 299)
    assert is_synthetic(root)
    assert "SYNTHETIC" in (root / "SYNTHETIC_README.txt").read_text()


def test_seeded_and_covid_has_lung_opacities(tmp_path: Path) -> None:
    a = write_demo_dataset(tmp_path / "a", per_class=8, seed=3)
    b = write_demo_dataset(tmp_path / "b", per_class=8, seed=3)
    first = (a / "COVID" / "images" / "COVID-1.png").read_bytes()
    assert first == (b / "COVID" / "images" / "COVID-1.png").read_bytes()

    def lower_lung_mean(label: str) -> float:
        pixels = [np.asarray(Image.open(p)) for p in (a / label / "images").glob("*.png")]
        return float(np.mean([p[150:240, 40:110].mean() + p[150:240, 190:260].mean() for p in pixels]))

    assert lower_lung_mean("COVID") > lower_lung_mean("Normal") + 5
