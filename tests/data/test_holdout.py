"""``cxr holdout``: real images set aside before any run, near-copies on one side."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxr.core.config import DataConfig
from cxr.core.errors import DataInputError
from cxr.data.holdout import make_holdout
from cxr.data.ingestion import ingest
from tests.conftest import last_json, link_dataset, real_images, run_cli
from tests.data.test_near_duplicates import _copy

CLASSES = ["Normal", "COVID"]

pytestmark = pytest.mark.real_data


@pytest.fixture
def dataset_with_copies(tmp_path: Path) -> Path:
    """20 + 20 real images, near-copies (re-encoded) of three COVID images, and one
    near-copy of a fourth COVID image filed as Normal (a label conflict)."""
    covid = real_images("COVID", 20)
    root = link_dataset(tmp_path / "src", {"COVID": covid, "Normal": real_images("Normal", 20)})
    for original in covid[:3]:
        (root / "COVID" / "images" / f"copy-{original.name}").write_bytes(_copy(original))
    (root / "Normal" / "images" / f"conflict-{covid[3].name}").write_bytes(_copy(covid[3]))
    return root


def test_unseen_and_pool_are_disjoint_and_readable(dataset_with_copies: Path, tmp_path: Path):
    out = tmp_path / "holdout"
    summary = make_holdout(dataset_with_copies, out, 5, 0, CLASSES, near_distance=10)
    assert summary["counts"] == {
        "pool/COVID": 18, "pool/Normal": 16, "unseen/COVID": 5, "unseen/Normal": 5,
    }  # fmt: skip
    assert summary["near_copies_across_parts"] == 0
    table = pd.read_csv(out / "holdout.csv")
    conflict = table["path"].str.contains("conflict-") | table["path"].str.endswith(
        "/" + real_images("COVID", 4)[3].name
    )
    assert conflict.sum() == 2 and set(table.loc[conflict, "part"]) == {"pool"}
    assert table.groupby("sha256")["part"].nunique().max() == 1
    for original in sorted(table["path"]):
        if Path(original).name.startswith("copy-"):
            twin = table.loc[table["path"].str.endswith("/" + Path(original).name[5:])]
            copy = table.loc[table["path"] == original]
            assert twin["part"].item() == copy["part"].item()
    for part, n in (("pool", 34), ("unseen", 10)):
        images = ingest(out / part, DataConfig(samples_per_class=None), seed=0)
        assert len(images) == n and images["readable"].all()
    unseen = set(ingest(out / "unseen", DataConfig(samples_per_class=None), 0)["sha256"])
    pool = set(ingest(out / "pool", DataConfig(samples_per_class=None), 0)["sha256"])
    assert not unseen & pool


def test_refuses_to_overwrite_or_to_take_a_whole_class(dataset_with_copies: Path, tmp_path: Path):
    out = tmp_path / "holdout"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataInputError, match="not empty"):
        make_holdout(dataset_with_copies, out, 5, 0, CLASSES, 10)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(DataInputError, match="cannot set 21 aside"):
        make_holdout(dataset_with_copies, tmp_path / "other", 21, 0, CLASSES, 10)


def test_cli_prints_the_summary(dataset_with_copies: Path, tmp_path: Path) -> None:
    out = tmp_path / "holdout"
    args = ["holdout", "--data-dir", str(dataset_with_copies), "--out", str(out)]
    done = run_cli(*args, "--per-class", "4")
    assert done.returncode == 0, done.stderr[-2000:]
    assert last_json(done.stdout)["counts"]["unseen/Normal"] == 4
    again = run_cli(*args, "--per-class", "4")
    assert again.returncode == 2 and "not empty" in again.stderr


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_copies_never_straddle_parts_whatever_the_seed(dataset_with_copies, tmp_path, seed):
    out = tmp_path / f"holdout-{seed}"
    summary = make_holdout(dataset_with_copies, out, 8, seed, CLASSES, near_distance=10)
    assert summary["near_copies_across_parts"] == 0
    assert summary["counts"]["unseen/COVID"] == summary["counts"]["unseen/Normal"] == 8
