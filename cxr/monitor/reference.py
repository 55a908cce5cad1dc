"""The monitoring reference: the gated model's test (and validation) split, with the same
per-image statistics and the same columns as the prediction log, stored beside the model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxr.core.config import MonitorConfig
from cxr.core.image_stats import STAT_COLUMNS
from cxr.core.ood import OUT_OF_DISTRIBUTION

REFERENCE_FILE = "reference.csv"
IMAGE_COLUMNS = ["width", "height", "mode", "bytes", *STAT_COLUMNS]
OOD_COLUMNS = ["in_distribution", "ood_score"]  # only for models with an OOD detector


def split_predictions(predictions_dir: Path, model: str) -> pd.DataFrame:
    """The reference's rows: the model's test predictions and, where the run wrote them
    with the same columns, its validation predictions (a reference twice as large), each
    with its OOD scores and flags when the run has them (``<model>_<split>_ood.csv``)."""
    frames = []
    for split in ("test", "val"):
        file = Path(predictions_dir) / f"{model}_{split}.csv"
        if split == "val" and not file.exists():  # a run from before validation was saved
            continue
        frame = pd.read_csv(file)
        ood = Path(predictions_dir) / f"{model}_{split}_ood.csv"
        if ood.exists():
            frame = frame.merge(pd.read_csv(ood), on="path", how="left")
        if frames and set(frame.columns) != set(frames[0].columns):
            continue  # validation rows without the test rows' OOD verdicts: not comparable
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def build_reference(
    images: pd.DataFrame,
    test_predictions: pd.DataFrame,
    classes: list[str],
    cutoff: float,
    statistics_only: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Test images' statistics joined with the model's test probabilities (and, when
    ``test_predictions`` has them, its OOD scores and flags: the label is then
    ``out_of_distribution`` where the detector refuses the image, as the service says).

    ``statistics_only`` (the training split's rows of the ingestion table) adds rows with
    the image statistics alone: those do not depend on the model, so the training images
    are as good a sample of the population as the others and make the statistics' tests
    steadier; their model columns stay empty (the model was fitted to them: its
    probabilities and OOD scores there are biased), and each test reads a column's
    non-empty rows. ``part`` says which rows are which."""
    merged = test_predictions.merge(images[["path", *IMAGE_COLUMNS]], on="path", how="left")
    if merged[IMAGE_COLUMNS].isna().any().any():
        raise ValueError("reference: some test images are missing from the ingestion table")
    predicted = (merged["covid_probability"] >= cutoff).astype(int)
    labels = pd.Series([classes[i] for i in predicted], index=merged.index)
    ood = {column: merged[column] for column in OOD_COLUMNS if column in merged}
    if "in_distribution" in ood:
        ood["in_distribution"] = ood["in_distribution"].astype(bool)
        labels = labels.where(ood["in_distribution"], OUT_OF_DISTRIBUTION)
    reference = pd.DataFrame(
        {
            "covid_probability": merged["covid_probability"],
            "label": labels,
            "actual_label": [classes[int(i)] for i in merged["label_index"]],
            **ood,
            **{column: merged[column] for column in IMAGE_COLUMNS},
            "part": "evaluation",
        }
    )
    if statistics_only is None or statistics_only.empty:
        return reference
    extra = statistics_only[IMAGE_COLUMNS].assign(
        actual_label=statistics_only["label"].to_numpy(), part="training_statistics"
    )
    return pd.concat([reference, extra], ignore_index=True)


def training_statistics(images: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """The ingestion table's rows of the training split (``split.csv``): the rows that
    ``build_reference`` adds with their image statistics alone."""
    train = set(split.loc[split["split"] == "train", "path"])
    return images.loc[images["path"].isin(train)].reset_index(drop=True)


def monitored(
    config: MonitorConfig, reference: pd.DataFrame, current: pd.DataFrame
) -> MonitorConfig:
    """``config`` without the numeric columns that the reference lacks or that no current
    row has (the OOD score of a model packaged before the check)."""

    def present(column: str) -> bool:
        return column in reference and column in current and current[column].notna().any()

    numeric = [column for column in config.numeric_columns if present(column)]
    return config.model_copy(update={"numeric_columns": numeric})
