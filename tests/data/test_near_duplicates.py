"""Near-duplicate leakage: re-encoded copies of real radiographs stay in one split."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from cxr.core.config import DataConfig, PreprocessConfig
from cxr.data.dataset import split_dataset
from cxr.data.ingestion import ingest
from cxr.data.near_duplicates import close_pairs, difference_hash, leakage_report
from tests.conftest import link_dataset, real_images

pytestmark = pytest.mark.real_data


def _copy(path: Path) -> bytes:
    """A plausible near-copy: downscaled, re-encoded as JPEG, back to 299x299."""
    image = Image.open(path).resize((256, 256))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    buffer.seek(0)
    out = io.BytesIO()
    Image.open(buffer).convert("L").resize((299, 299)).save(out, format="PNG")
    return out.getvalue()


def test_copies_are_close_and_different_images_are_far(tmp_path: Path) -> None:
    import numpy as np

    a, b = real_images("COVID", 2, offset=50)
    copy = tmp_path / "copy.png"
    copy.write_bytes(_copy(a))
    hashes = [difference_hash(np.asarray(Image.open(p))) for p in (a, copy, b)]
    first, second, distance = close_pairs(hashes, 256)
    pairs = zip(first.tolist(), second.tolist(), strict=True)
    by_pair = dict(zip(pairs, distance.tolist(), strict=True))
    assert by_pair[(0, 1)] <= 4 and by_pair[(0, 2)] > 20


def test_split_keeps_near_copies_together(tmp_path: Path) -> None:
    covid, normal = real_images("COVID", 30, offset=60), real_images("Normal", 30, offset=60)
    root = link_dataset(tmp_path, {"COVID": covid, "Normal": normal})
    for i, path in enumerate(covid[:5] + normal[:5]):
        label = "COVID" if i < 5 else "Normal"
        (root / label / "images" / f"{label}-copy{i}.png").write_bytes(_copy(path))
    images = ingest(root, DataConfig(samples_per_class=None), seed=0)
    split = split_dataset(images, PreprocessConfig(), seed=3)
    report = leakage_report(split, PreprocessConfig().near_duplicate_distance)
    assert report["groups_with_copies"] >= 10 and report["cross_split_pairs"] == 0
    assert report["groups_with_conflicting_labels"] == 0
    for i, path in enumerate(covid[:5] + normal[:5]):
        pair = split.loc[split["path"].str.endswith((path.name, f"-copy{i}.png")), "split"]
        assert len(pair) == 2 and pair.nunique() == 1
    sizes = split["split"].value_counts()
    assert sizes["train"] > sizes["val"] > 0 and sizes["test"] > 0


def test_distinct_radiographs_do_not_chain_into_big_groups() -> None:
    """The hash must tell chest X-rays apart: on the whole shared sample, near-copy
    groups stay tiny (a weak hash chains hundreds of images into one group)."""
    from tests.conftest import RELEASE

    if not RELEASE.is_dir():
        pytest.skip(f"real data not found at {RELEASE}")
    images = ingest(RELEASE, DataConfig(samples_per_class=None), seed=0)
    split = split_dataset(images, PreprocessConfig(), seed=42)
    assert split.groupby("group").size().max() <= 3
    assert leakage_report(split, PreprocessConfig().near_duplicate_distance)["cross_split_pairs"] == 0
