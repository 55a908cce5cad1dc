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


def test_image_statistics_alone_cannot_pass_the_gate_on_demo_data() -> None:
    """The demo is not solvable from global statistics: a logistic regression on the
    monitored image statistics stays below the gate's 0.95 (5-fold cross-validation)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cxr.core.config import GateConfig
    from cxr.core.image_stats import STAT_COLUMNS, image_statistics
    from cxr.data.demo_data import draw_phantom

    rng = np.random.default_rng(0)
    rows, labels = [], []
    for _ in range(150):
        for covid in (False, True):
            stats = image_statistics(draw_phantom(rng, covid))
            rows.append([stats[column] for column in STAT_COLUMNS])
            labels.append(int(covid))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    accuracy = cross_val_score(model, np.array(rows), np.array(labels), cv=5).mean()
    assert 0.5 < accuracy < GateConfig().min_score
