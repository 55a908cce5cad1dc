"""Ingestion task."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cxr.core.config import Settings
from cxr.core.runs import Run
from cxr.data.ingestion import (
    ImageEntry,
    combine,
    describe_entries,
    ingest,
    sample_entries,
    shards,
    unreadable,
)
from tasks.artifacts import publish_table


@task(name="ingest-plan", cache_policy=NO_CACHE)
def plan_shards(data_dir: Path, settings: Settings) -> list[list[ImageEntry]]:
    """Sample N images per class and cut the list into shards of ``runner.shard_images``."""
    entries = sample_entries(data_dir, settings.data, settings.train.seed)
    planned = shards(entries, settings.runner.shard_images)
    get_run_logger().info("%d images in %d shards", len(entries), len(planned))
    return planned


@task(name="ingest-shard", cache_policy=NO_CACHE)
def describe_shard(entries: list[ImageEntry]) -> list[dict[str, object]]:
    """Describe one shard: size, mode, sha256, perceptual hash, intensity statistics."""
    return describe_entries(entries)


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_images(
    data_dir: Path,
    settings: Settings,
    run: Run,
    described: list[list[dict[str, object]]] | None = None,
) -> pd.DataFrame:
    """Sample N images per class and describe each (``described``: the rows of the
    shards, in order, from :func:`describe_shard`); unreadable files are reported."""
    logger = get_run_logger()
    if described is None:
        images = ingest(data_dir, settings.data, settings.train.seed)
    else:
        images = combine(described)
    images.to_csv(run.path("ingestion", "images.csv"), index=False)
    bad = unreadable(images)
    bad.to_csv(run.path("ingestion", "unreadable.csv"), index=False)
    for row in bad.itertuples():
        logger.warning("excluded unreadable image %s: %s", row.path, row.error)
    counts = images.groupby("label")["readable"].agg(["size", "sum"]).reset_index()
    summary = [
        {"label": r.label, "sampled": int(r.size), "readable": int(r.sum)}
        for r in counts.itertuples()
    ]
    logger.info("ingested %d images from %s: %s", len(images), data_dir, summary)
    publish_table("ingestion-summary", summary, f"run {run.run_id}: images per class")
    if len(bad):
        publish_table(
            "ingestion-unreadable", bad.to_dict("records"), f"run {run.run_id}: excluded files"
        )
    return images
