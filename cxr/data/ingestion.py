"""Ingestion: find the images of each class, sample N per class, describe each file.

Layouts read:
- the release: ``<root>/<Class>/images/*.png`` (``masks/`` and metadata files ignored);
- a plain one: ``<root>/<Class>/*.png|jpg|jpeg``;
in either, DICOM files (``*.dcm``) beside or instead of the PNGs.
``<root>`` may also be the folder that holds ``COVID-19_Radiography_Dataset``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.core.config import DataConfig
from cxr.core.errors import DataInputError
from cxr.core.image_stats import STAT_COLUMNS, image_statistics
from cxr.core.preprocessing import ImageDecodeError, decode_image
from cxr.data.demo_data import DATASET_DIRNAME
from cxr.data.near_duplicates import difference_hash

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}
# DICOM_COLUMNS: what a DICOM header says of the film (empty for PNG/JPEG); never a
# patient identifier. ``mode`` is the PIL mode, or the DICOM photometric interpretation.
DICOM_COLUMNS = ["modality", "view_position", "bits_stored"]
COLUMNS = [
    "path", "label", "label_index", "width", "height", "mode", "format", "bytes", "sha256",
    "readable", "error", "dhash", *DICOM_COLUMNS, *STAT_COLUMNS,
]  # fmt: skip


ImageEntry = tuple[Path, str, int]  # an image to ingest: path, label, label index


class IngestionError(DataInputError):
    """The data folder cannot be read as a dataset."""


def resolve_dataset_root(data_dir: Path) -> Path:
    """Accept the dataset folder itself or the folder that contains it."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise IngestionError(f"data folder not found: {data_dir}")
    nested = data_dir / DATASET_DIRNAME
    return nested if nested.is_dir() else data_dir


def list_class_images(root: Path, label: str) -> list[Path]:
    """All image files of one class, sorted, in either layout."""
    class_dir = root / label
    if not class_dir.is_dir():
        raise IngestionError(f"class folder {label!r} not found in {root}")
    folder = class_dir / "images" if (class_dir / "images").is_dir() else class_dir
    # not is_dir(): a broken link is listed (and reported unreadable), not silently dropped
    return sorted(
        p for p in folder.iterdir() if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def describe_image(path: Path) -> dict[str, object]:
    """Size, mode, hash and intensity statistics of one file; never raises on bad bytes
    or on a file the operating system refuses to read (both become unreadable rows)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        data, read_error = b"", f"cannot read file: {error.strerror or error}"
    else:
        read_error = ""
    row: dict[str, object] = {
        "path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "width": None, "height": None, "mode": None, "format": None, "readable": False,
        "error": "", "dhash": None, **dict.fromkeys(DICOM_COLUMNS),
        **dict.fromkeys(STAT_COLUMNS, float("nan")),
    }  # fmt: skip
    if read_error:
        row["error"] = read_error
        return row
    try:
        decoded = decode_image(data)
    except ImageDecodeError as error:  # DICOM errors included
        row["error"] = str(error)
        return row
    gray, header = decoded.gray, decoded.dicom
    if header is not None:
        row.update(
            modality=header.modality, view_position=header.view_position,
            bits_stored=header.bits_stored,
        )  # fmt: skip
    row.update(
        height=int(gray.shape[0]), width=int(gray.shape[1]), mode=decoded.mode,
        format=decoded.format, readable=True, dhash=difference_hash(gray),
        **image_statistics(gray),
    )  # fmt: skip
    return row


def sample_paths(paths: list[Path], n: int | None, seed: int) -> list[Path]:
    """Seeded sample of n paths (all of them when n is None or larger than the list)."""
    if n is None or n >= len(paths):
        return list(paths)
    chosen = np.random.default_rng(seed).choice(len(paths), size=n, replace=False)
    return [paths[i] for i in sorted(chosen)]


def sample_entries(data_dir: Path, config: DataConfig, seed: int) -> list[ImageEntry]:
    """The sampled images to describe, class by class: (path, label, label_index)."""
    root = resolve_dataset_root(data_dir)
    entries = [
        (path, label, index)
        for index, label in enumerate(config.classes)
        for path in sample_paths(list_class_images(root, label), config.samples_per_class, seed)
    ]
    if not entries:
        raise IngestionError(f"no images found under {root}")
    return entries


def shards(entries: list[ImageEntry], size: int) -> list[list[ImageEntry]]:
    """Consecutive slices of at most ``size`` entries (the order is kept)."""
    return [entries[start : start + size] for start in range(0, len(entries), size)]


def describe_entries(entries: list[ImageEntry]) -> list[dict[str, object]]:
    """The ingestion rows of some entries, one each, in their order."""
    return [
        {**describe_image(path), "label": label, "label_index": index}
        for path, label, index in entries
    ]


def combine(parts: list[list[dict[str, object]]]) -> pd.DataFrame:
    """The ingestion table of consecutive shards' rows: the same table, column types
    included, as the rows described in one go."""
    return pd.DataFrame([row for part in parts for row in part], columns=COLUMNS)


def ingest(data_dir: Path, config: DataConfig, seed: int) -> pd.DataFrame:
    """One row per sampled image: path, label, label_index, size, mode, bytes, sha256, ...
    (in one go; a Dask run describes :func:`shards` of the entries on its workers)."""
    return combine([describe_entries(sample_entries(data_dir, config, seed))])


def unreadable(images: pd.DataFrame) -> pd.DataFrame:
    """The rows that could not be decoded, with their error."""
    return images.loc[~images["readable"], ["path", "label", "error"]]


def fingerprint(images: pd.DataFrame) -> str:
    """sha256 over the sorted (file sha256, label) pairs: identifies the exact dataset."""
    pairs = sorted(zip(images["sha256"], images["label"], strict=True))
    return hashlib.sha256("\n".join(f"{s} {label}" for s, label in pairs).encode()).hexdigest()
