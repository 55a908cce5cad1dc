"""Ingestion in shards (what a Dask run's workers describe) gives the table of one go."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxr.core.config import DataConfig
from cxr.data.ingestion import combine, describe_entries, ingest, sample_entries, shards
from tests.conftest import link_dataset, real_images


def test_shards_are_consecutive_slices_in_order() -> None:
    entries = [(Path(f"{i}.png"), "COVID", 1) for i in range(7)]
    planned = shards(entries, 3)
    assert [len(part) for part in planned] == [3, 3, 1]
    assert [entry for part in planned for entry in part] == entries
    assert shards(entries, 10) == [entries]


@pytest.mark.real_data
def test_sharded_ingestion_equals_one_go_unreadable_and_column_types_included(
    tmp_path: Path,
) -> None:
    root = link_dataset(
        tmp_path, {"COVID": real_images("COVID", 5), "Normal": real_images("Normal", 5)}
    )
    # a shard of only unreadable files: its size columns hold nothing but None
    for name in ("COVID-broken-1.png", "COVID-broken-2.png"):
        (root / "COVID" / "images" / name).write_bytes(b"not a png")
    config = DataConfig(samples_per_class=None)
    whole = ingest(tmp_path, config, seed=0)
    entries = sample_entries(tmp_path, config, seed=0)
    broken = [i for i, (path, _, _) in enumerate(entries) if "broken" in path.name]
    assert broken == [10, 11]  # sorted last: in shards of 2 they fill the last one
    for size in (2, 3, 12):
        sharded = combine([describe_entries(part) for part in shards(entries, size)])
        pd.testing.assert_frame_equal(sharded, whole)
    assert whole["dhash"].notna().sum() == 10 and (~whole["readable"]).sum() == 2
