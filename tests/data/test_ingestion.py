"""Ingestion on real radiographs: both layouts, sampling, unreadable files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cxr.core.config import DataConfig
from cxr.data.ingestion import COLUMNS, IngestionError, fingerprint, ingest, unreadable
from tests.conftest import RELEASE, link_dataset, real_images


@pytest.mark.real_data
def test_reads_the_shared_release_and_ignores_masks_and_metadata(tmp_path: Path) -> None:
    root = link_dataset(
        tmp_path, {"COVID": real_images("COVID", 6), "Normal": real_images("Normal", 6)}
    )
    (root / "COVID" / "masks").mkdir()
    shutil.copyfile(real_images("COVID", 1)[0], root / "COVID" / "masks" / "COVID-1.png")
    (root / "COVID.metadata.xlsx").write_bytes(b"not an image")
    (root / "README.md.txt").write_text("notes")
    images = ingest(tmp_path, DataConfig(samples_per_class=None), seed=0)  # parent folder works
    assert list(images.columns) == COLUMNS
    assert len(images) == 12 and not images["path"].str.contains("masks").any()
    assert images["readable"].all()
    assert set(images["width"]) == {299} and set(images["height"]) == {299}
    assert set(images["mode"]) == {"L"}
    assert images.groupby("label")["label_index"].first().to_dict() == {"COVID": 1, "Normal": 0}


@pytest.mark.real_data
def test_plain_layout_with_jpeg(tmp_path: Path) -> None:
    from PIL import Image

    for label in ("COVID", "Normal"):
        (tmp_path / label).mkdir()
        for path in real_images(label, 3):
            Image.open(path).save(tmp_path / label / f"{path.stem}.jpg", quality=95)
    images = ingest(tmp_path, DataConfig(samples_per_class=None), seed=0)
    assert len(images) == 6 and images["readable"].all()


@pytest.mark.real_data
def test_seeded_sampling_of_the_full_sample() -> None:
    if not RELEASE.is_dir():
        pytest.skip("real data not found")
    config = DataConfig(samples_per_class=20)
    a, b = ingest(RELEASE, config, seed=7), ingest(RELEASE, config, seed=7)
    c = ingest(RELEASE, config, seed=8)
    assert a["path"].tolist() == b["path"].tolist() != c["path"].tolist()
    assert a["label"].value_counts().to_dict() == {"Normal": 20, "COVID": 20}
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


@pytest.mark.real_data
def test_corrupt_png_is_reported_not_fatal(tmp_path: Path) -> None:
    root = link_dataset(
        tmp_path, {"COVID": real_images("COVID", 4), "Normal": real_images("Normal", 4)}
    )
    good = real_images("COVID", 5)[4].read_bytes()
    (root / "COVID" / "images" / "COVID-broken.png").write_bytes(good[: len(good) // 3])
    images = ingest(root, DataConfig(samples_per_class=None), seed=0)
    bad = unreadable(images)
    assert len(images) == 9 and len(bad) == 1
    assert bad.iloc[0]["path"].endswith("COVID-broken.png") and bad.iloc[0]["error"]


def test_missing_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(IngestionError, match="not found"):
        ingest(tmp_path / "nope", DataConfig(), seed=0)
    (tmp_path / "COVID").mkdir()
    with pytest.raises(IngestionError, match="'Normal' not found"):
        ingest(tmp_path, DataConfig(), seed=0)
