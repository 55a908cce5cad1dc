"""The monitoring reference: the gated model's test split, with the same per-image
statistics and the same columns as the prediction log, stored beside the model."""

from __future__ import annotations

import pandas as pd

from cxr.core.image_stats import STAT_COLUMNS

REFERENCE_FILE = "reference.csv"
IMAGE_COLUMNS = ["width", "height", "mode", "bytes", *STAT_COLUMNS]


def build_reference(
    images: pd.DataFrame, test_predictions: pd.DataFrame, classes: list[str], cutoff: float
) -> pd.DataFrame:
    """Test images' statistics joined with the model's test probabilities."""
    merged = test_predictions.merge(images[["path", *IMAGE_COLUMNS]], on="path", how="left")
    if merged[IMAGE_COLUMNS].isna().any().any():
        raise ValueError("reference: some test images are missing from the ingestion table")
    predicted = (merged["covid_probability"] >= cutoff).astype(int)
    return pd.DataFrame(
        {
            "covid_probability": merged["covid_probability"],
            "label": [classes[i] for i in predicted],
            "actual_label": [classes[int(i)] for i in merged["label_index"]],
            **{column: merged[column] for column in IMAGE_COLUMNS},
        }
    )
