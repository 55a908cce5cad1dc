"""Preprocessing task: stratified split (saved with the run) and model input arrays."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cxr.core.config import Settings
from cxr.core.runs import Run
from cxr.data.dataset import Arrays, split_arrays, split_dataset
from cxr.data.near_duplicates import leakage_report
from tasks.artifacts import publish_table


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess_images(images: pd.DataFrame, settings: Settings, run: Run) -> dict[str, Arrays]:
    """Split 80/10/10 by seed, save ``split.csv``, and preprocess every image once."""
    split = split_dataset(images, settings.preprocess, settings.train.seed)
    split[["path", "label", "label_index", "sha256", "dhash", "group", "split"]].to_csv(
        run.path("split.csv"), index=False
    )
    leakage = leakage_report(split, settings.preprocess.near_duplicate_distance)
    run.update_json("metrics.json", near_duplicates=leakage)
    publish_table("near-duplicates", [leakage], f"run {run.run_id}: near-duplicate leakage check")
    logger = get_run_logger()
    logger.info("near-duplicate check: %s", leakage)
    if leakage["cross_split_pairs"]:
        raise RuntimeError(f"near-duplicates cross splits despite grouping: {leakage}")
    counts = split.groupby(["split", "label"]).size().reset_index(name="images")
    run.update_json(
        "metrics.json", split_sizes={k: int(v) for k, v in split["split"].value_counts().items()}
    )
    publish_table("split", counts.to_dict("records"), f"run {run.run_id}: split sizes")
    logger.info("split sizes:\n%s", counts.to_string(index=False))
    return split_arrays(split, settings.preprocess)
