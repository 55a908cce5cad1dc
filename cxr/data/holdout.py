"""Set images aside before any run sees them: a ``pool`` to train on and an ``unseen`` set.

Both are folders of symbolic links in the release layout
(``<part>/COVID-19_Radiography_Dataset/<Class>/images/<file>``), so ``cxr train`` reads
the pool and ``cxr evaluate`` the unseen images exactly as they read a download, and no
image is copied. Near-copies (perceptual hashes within ``near_distance`` bits) are kept
on one side, so an unseen image never has a near-copy in the pool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr.core.config import DataConfig
from cxr.data.demo_data import DATASET_DIRNAME
from cxr.core.errors import DataInputError
from cxr.data.ingestion import ingest
from cxr.data.near_duplicates import close_pairs, near_duplicate_groups

PARTS = ("pool", "unseen")


def choose_unseen(images: pd.DataFrame, per_class: int, near_distance: int, seed: int) -> pd.Series:
    """True for the rows set aside: ``per_class`` images of each class, in whole
    near-copy groups. Groups that mix labels stay in the pool."""
    groups = near_duplicate_groups(images["dhash"].tolist(), near_distance)
    labels = images["label"].to_numpy()
    unseen = np.zeros(len(images), dtype=bool)
    rng = np.random.default_rng(seed)
    for label in sorted(set(labels)):
        of_class = np.flatnonzero(labels == label)
        if len(of_class) <= per_class:
            raise DataInputError(
                f"class {label!r} has {len(of_class)} readable images; "
                f"cannot set {per_class} aside and still train"
            )
        taken = 0
        for group in rng.permutation(np.unique(groups[of_class])):
            members = np.flatnonzero(groups == group)
            if (labels[members] != label).any() or taken + len(members) > per_class:
                continue
            unseen[members] = True
            taken += len(members)
            if taken == per_class:
                break
        if taken < per_class:
            raise DataInputError(
                f"could set only {taken} {label!r} images aside in whole near-copy groups, "
                f"not {per_class}; ask for fewer"
            )
    return pd.Series(unseen, index=images.index)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve())


def make_holdout(
    data_dir: Path,
    out_dir: Path,
    per_class: int,
    seed: int,
    classes: list[str],
    near_distance: int,
) -> dict[str, object]:
    """Write ``out_dir/{pool,unseen}`` link trees and ``out_dir/holdout.csv``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DataInputError(f"{out_dir} exists and is not empty; choose a new folder")
    if per_class < 1:
        raise DataInputError("per_class must be >= 1")
    images = ingest(data_dir, DataConfig(classes=classes, samples_per_class=None), seed)
    readable = images.loc[images["readable"]].reset_index(drop=True)
    readable["part"] = np.where(
        choose_unseen(readable, per_class, near_distance, seed), "unseen", "pool"
    )
    for row in readable.itertuples():
        source = Path(row.path)
        _link(source, out_dir / row.part / DATASET_DIRNAME / row.label / "images" / source.name)
    readable[["path", "label", "sha256", "dhash", "part"]].to_csv(
        out_dir / "holdout.csv", index=False
    )
    hashes = readable["dhash"].tolist()
    left, right, _ = close_pairs(hashes, near_distance)
    parts = readable["part"].to_numpy()
    counts = readable.groupby(["part", "label"]).size()
    return {
        "data_dir": str(Path(data_dir).resolve()),
        "out_dir": str(out_dir.resolve()),
        "seed": seed,
        "counts": {f"{part}/{label}": int(n) for (part, label), n in counts.items()},
        "unreadable_left_out": int((~images["readable"]).sum()),
        "near_copies_across_parts": int((parts[left] != parts[right]).sum()),
        "pool": str((out_dir / "pool" / DATASET_DIRNAME).resolve()),
        "unseen": str((out_dir / "unseen" / DATASET_DIRNAME).resolve()),
    }
