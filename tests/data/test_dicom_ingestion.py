"""A release-layout folder of DICOM films built from real radiographs: ingested, validated
with the DICOM checks instead of the 299x299 rule, split and trained on like the PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.core.config import DataConfig, PreprocessConfig, load_settings
from cxr.data.dataset import split_arrays, split_dataset
from cxr.data.ingestion import ingest, unreadable
from cxr.data.validation import validate_images
from tests.code.test_dicom import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, make_dicom, png_gray
from tests.conftest import link_dataset, real_images

pytestmark = pytest.mark.real_data
CONFIG = DataConfig(samples_per_class=None, min_images_per_class=5)
# (photometric, bits stored, window) in turn: both interpretations, 8 and 12 bits
FILMS = [
    ("MONOCHROME2", 8, None),
    ("MONOCHROME1", 12, (2048, 4096)),
    ("MONOCHROME2", 12, (2048, 4096)),
    ("MONOCHROME1", 8, None),
]


def _dicom_release(
    root: Path, per_class: int, side: int = 299, **overrides
) -> tuple[Path, dict[str, Path]]:
    """``root/COVID-19_Radiography_Dataset/<Class>/images/*.dcm`` from real PNGs (resized
    to ``side``); also returns which PNG each film was made from."""
    made_from = {}
    for label in ("COVID", "Normal"):
        folder = root / "COVID-19_Radiography_Dataset" / label / "images"
        folder.mkdir(parents=True)
        for i, path in enumerate(real_images(label, per_class, offset=40)):
            photometric, bits, window = FILMS[i % len(FILMS)]
            settings = {"photometric": photometric, "bits_stored": bits, "window": window}
            target = folder / f"{path.stem}.dcm"
            gray = png_gray(path)
            if side != gray.shape[0]:
                gray = np.asarray(Image.fromarray(gray).resize((side, side)), dtype=np.uint8)
            target.write_bytes(make_dicom(gray, **(settings | overrides)))
            made_from[str(target)] = path
    return root / "COVID-19_Radiography_Dataset", made_from


def _failed(report) -> set[tuple[str, str | None]]:
    return {(f["expectation"], f["column"]) for f in report.failures}


def test_dicom_folder_ingests_validates_and_trains(tmp_path: Path) -> None:
    root, made_from = _dicom_release(tmp_path / "dicom", per_class=10)
    images = ingest(root, CONFIG, seed=0)
    assert len(images) == 20 and images["readable"].all(), unreadable(images)
    assert set(images["format"]) == {"DICOM"} and set(images["modality"]) == {"DX"}
    assert set(images["mode"]) == {"MONOCHROME1", "MONOCHROME2"}
    assert set(images["bits_stored"]) == {8, 12} and set(images["width"]) == {299}
    table = images.to_csv(index=False)  # what the run folder's ingestion/images.csv holds
    assert FAKE_PATIENT_NAME.split("^")[0] not in table and FAKE_PATIENT_ID not in table
    report = validate_images(images, CONFIG, tmp_path / "docs")
    assert report.success, report.message()
    docs = [p.read_bytes() for p in (tmp_path / "docs").rglob("*") if p.is_file()]
    assert docs and not [d for d in docs if FAKE_PATIENT_ID.encode() in d]  # Data Docs too

    # the same radiographs as PNGs: the same statistics and (within rounding) model inputs
    pngs = ingest(
        link_dataset(tmp_path / "png", {
            label: [p for f, p in made_from.items() if f"/{label}/" in f]
            for label in ("COVID", "Normal")
        }),
        CONFIG, seed=0,
    )  # fmt: skip
    np.testing.assert_allclose(images["mean_intensity"], pngs["mean_intensity"], atol=0.5)
    preprocess = PreprocessConfig(image_size=32, near_duplicate_distance=0)
    split = split_dataset(images, preprocess, seed=0)
    arrays = split_arrays(split, preprocess)
    png_arrays = split_arrays(split.assign(path=split["path"].map(made_from).map(str)), preprocess)
    for name, part in arrays.items():
        assert np.abs(part.x - png_arrays[name].x).max() < 0.01, name

    import keras

    from cxr.train.models import build_model

    settings = load_settings("demo", environ={})
    keras.utils.set_random_seed(0)
    model = build_model("lstm", 32, settings.model, settings.train)
    history = model.fit(arrays["train"].x, arrays["train"].y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_dicom_films_are_not_held_to_the_releases_299x299(tmp_path: Path) -> None:
    root, _ = _dicom_release(tmp_path / "large", per_class=5, side=640)
    images = ingest(root, CONFIG, seed=0)
    assert set(images["width"]) == {640}
    report = validate_images(images, CONFIG, tmp_path / "docs")
    assert report.success, report.message()


def test_ct_lateral_and_small_dicoms_fail_validation(tmp_path: Path) -> None:
    root, _ = _dicom_release(tmp_path / "ct", per_class=5, modality="CT")
    report = validate_images(ingest(root, CONFIG, seed=0), CONFIG, tmp_path / "docs-ct")
    assert _failed(report) == {("expect_column_values_to_be_in_set", "modality")}
    assert "CT" in report.message()

    root, _ = _dicom_release(tmp_path / "lateral", per_class=5, view_position="LL")
    report = validate_images(ingest(root, CONFIG, seed=0), CONFIG, tmp_path / "docs-ll")
    assert _failed(report) == {("expect_column_values_to_not_be_in_set", "view_position")}

    root, _ = _dicom_release(tmp_path / "six-bit", per_class=5, bits_stored=6, window=None)
    report = validate_images(ingest(root, CONFIG, seed=0), CONFIG, tmp_path / "docs-6")
    assert _failed(report) == {("expect_column_values_to_be_between", "bits_stored")}

    strict = CONFIG.model_copy(update={"dicom_min_side": 512})  # the 299x299 films are small
    root, _ = _dicom_release(tmp_path / "small", per_class=5)
    report = validate_images(ingest(root, strict, seed=0), strict, tmp_path / "docs-small")
    assert _failed(report) == {
        ("expect_column_values_to_be_between", "width"),
        ("expect_column_values_to_be_between", "height"),
    }


def test_multi_frame_and_truncated_dicoms_are_unreadable_rows(tmp_path: Path) -> None:
    root, _ = _dicom_release(tmp_path / "mixed", per_class=5)
    films = sorted((root / "COVID" / "images").glob("*.dcm"))
    films[0].write_bytes(films[0].read_bytes()[:2000])
    gray = np.full((300, 300), 100, dtype=np.uint8)
    films[1].write_bytes(make_dicom(gray, frames=2))
    images = ingest(root, CONFIG, seed=0)
    bad = unreadable(images).set_index("path")["error"]
    assert bad[str(films[0])].startswith("DICOM pixel data cannot be decoded")
    assert "2 frames" in bad[str(films[1])] and len(bad) == 2
