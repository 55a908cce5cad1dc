"""Stratified 80/10/10 split and the in-memory arrays the models train on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from cxr.core.config import PreprocessConfig
from cxr.data.near_duplicates import near_duplicate_groups
from cxr.core.preprocessing import decode_image, to_model_input

SPLITS = ("train", "val", "test")


@dataclass
class Arrays:
    """Model inputs and labels of one split."""

    x: np.ndarray
    y: np.ndarray
    paths: list[str]
    colour: np.ndarray | None = None  # each file's colourfulness (cxr.core.preprocessing)


def split_dataset(images: pd.DataFrame, config: PreprocessConfig, seed: int) -> pd.DataFrame:
    """Readable images with ``group`` and ``split`` columns, stratified by label.

    Near-duplicates (perceptual hashes within ``config.near_duplicate_distance`` bits)
    form one group, and a group is never divided between splits.
    """
    usable = images.loc[images["readable"]].reset_index(drop=True)
    usable["group"] = near_duplicate_groups(
        usable["dhash"].tolist(), config.near_duplicate_distance
    )
    groups = usable.drop_duplicates("group")[["group", "label_index"]]
    held_out = config.val_fraction + config.test_fraction
    train, rest = train_test_split(
        groups, test_size=held_out, stratify=groups["label_index"], random_state=seed
    )
    val, test = train_test_split(
        rest,
        test_size=config.test_fraction / held_out,
        stratify=rest["label_index"],
        random_state=seed,
    )
    split_of: dict[int, str] = {}
    for name, part in zip(SPLITS, (train, val, test), strict=True):
        split_of.update(dict.fromkeys(part["group"], name))
    usable["split"] = usable["group"].map(split_of)
    return usable.sort_values(["split", "label", "path"]).reset_index(drop=True)


def load_arrays(paths: list[str], labels: list[int], image_size: int) -> Arrays:
    """Read and preprocess every image once into a float32 array (N, S, S, 3)."""
    x = np.empty((len(paths), image_size, image_size, 3), dtype=np.float32)
    colour = np.zeros(len(paths), dtype=np.float64)
    for i, path in enumerate(paths):
        decoded = decode_image(Path(path).read_bytes())
        x[i], colour[i] = to_model_input(decoded.gray, image_size), decoded.colour
    return Arrays(x=x, y=np.asarray(labels, dtype=np.float32), paths=list(paths), colour=colour)


def split_arrays(split: pd.DataFrame, config: PreprocessConfig) -> dict[str, Arrays]:
    """Arrays for train, val and test, preprocessed as ``config`` says."""
    return {
        name: load_arrays(
            part["path"].tolist(),
            part["label_index"].astype(int).tolist(),
            config.image_size,
        )
        for name, part in ((s, split.loc[split["split"] == s]) for s in SPLITS)
    }
