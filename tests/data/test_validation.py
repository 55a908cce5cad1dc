"""The Great Expectations suite on real radiographs: what passes and what stops a run."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from cxr.core.config import DataConfig
from cxr.data.ingestion import ingest
from cxr.data.validation import load_suite, validate_images
from tests.conftest import link_dataset, real_images

CONFIG = DataConfig(samples_per_class=None, min_images_per_class=5)


def _failed(report) -> set[tuple[str, str | None]]:
    return {(f["expectation"], f["column"]) for f in report.failures}


def test_suite_file_loads_every_expectation() -> None:
    assert len(load_suite().expectations) >= 12


@pytest.mark.real_data
def test_real_balanced_sample_passes_and_builds_data_docs(small_real_dataset, tmp_path) -> None:
    report = validate_images(ingest(small_real_dataset, CONFIG, 0), CONFIG, tmp_path / "docs")
    assert report.success, report.message()
    assert report.docs_index is not None and report.docs_index.is_file()


@pytest.mark.real_data
def test_wrong_size_images_fail(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for label in ("COVID", "Normal"):
        folder = root / label / "images"
        folder.mkdir(parents=True)
        for path in real_images(label, 10):
            Image.open(path).resize((256, 256)).save(folder / path.name)
    report = validate_images(ingest(root, CONFIG, 0), CONFIG, tmp_path / "docs")
    assert not report.success
    assert _failed(report) == {
        ("expect_column_values_to_be_between", "width"),
        ("expect_column_values_to_be_between", "height"),
    }
    assert "width" in report.message() and "256" in report.message()


@pytest.mark.real_data
def test_five_to_one_imbalance_fails(tmp_path: Path) -> None:
    root = link_dataset(
        tmp_path, {"COVID": real_images("COVID", 50), "Normal": real_images("Normal", 10)}
    )
    report = validate_images(ingest(root, CONFIG, 0), CONFIG, tmp_path / "docs")
    assert _failed(report) == {("expect_column_mean_to_be_between", "label_index")}


@pytest.mark.real_data
def test_duplicates_and_unreadable_files_fail(tmp_path: Path) -> None:
    covid = real_images("COVID", 10)
    root = link_dataset(tmp_path, {"COVID": covid, "Normal": real_images("Normal", 10)})
    (root / "Normal" / "images" / "Normal-copy.png").symlink_to(covid[0])
    for i in range(3):
        (root / "COVID" / "images" / f"COVID-bad{i}.png").write_bytes(b"\x89PNG broken")
    config = CONFIG.model_copy(update={"balance_tolerance": 0.2})
    report = validate_images(ingest(root, config, 0), config, tmp_path / "docs")
    assert _failed(report) == {
        ("expect_column_values_to_be_unique", "sha256"),
        ("expect_column_values_to_be_in_set", "readable"),
    }
