"""Ingestion and perceptual hashing of all of ``../shared/data`` on Dask: 1 vs 2 workers.

    .venv/bin/python benchmarks/ingest_scale.py                  # about 3 min on 2 cores (README)
    .venv/bin/python benchmarks/ingest_scale.py --workers 1 --workers 2 --workers 4

Every image of the shared data (the release's COVID and Normal folders and the
Tuberculosis folder; ``$CXR_SHARED_DATA`` or ``../shared/data``) is described the way the
training flow's ingestion does it: read, sha256, decode, the 256-bit difference hash and
the intensity statistics validation checks. For each worker count, a local Dask cluster
of that many processes (one thread each) runs a Prefect flow on Prefect's
``DaskTaskRunner`` (what ``cxr train --task-runner dask`` uses) with one ``ingest-shard``
task per ``--shard-images`` images, combined into one table in order. The time counts from
the first shard submitted to the combined table (not the cluster's start); best of
``--repeat`` rounds on the same cluster (the first also imports the code on the workers).
The table is checked against the one of a single process (the default runner's path).

Prints the seconds and images/s of each worker count and the speed-up over 1 worker.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cxr.environment import apply_defaults  # noqa: E402

apply_defaults()  # as the cxr command sets them

import pandas as pd  # noqa: E402
from prefect import flow  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402

from cxr.core.config import DataConfig, RunnerConfig  # noqa: E402
from cxr.data.ingestion import ImageEntry, combine, describe_entries, sample_entries, shards  # noqa: E402  # noqa: E402
from cxr.train.dask_runner import prefect_api_url, task_runner  # noqa: E402
from tasks.ingest import describe_shard  # noqa: E402

app = typer.Typer()
SHARED = Path(
    os.environ.get("CXR_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
DATASETS = {  # folder -> its classes
    "COVID-19_Radiography_Dataset": ["Normal", "COVID"],
    "TB_Chest_Radiography_Database": ["Tuberculosis"],
}


def all_entries(shared: Path) -> list[ImageEntry]:
    """Every image of the shared data, dataset by dataset, class by class."""
    entries: list[ImageEntry] = []
    for folder, classes in DATASETS.items():
        config = DataConfig(classes=classes, samples_per_class=None)
        entries += sample_entries(shared / folder, config, seed=0)
    return entries


@flow(name="cxr-ingest-scale", log_prints=True)
def ingest_rounds(planned: list[list[ImageEntry]], repeat: int) -> tuple[float, pd.DataFrame]:
    """Describe the shards on the flow's task runner ``repeat`` times; the best time and
    the combined table."""
    best, images = float("inf"), pd.DataFrame()
    for _ in range(repeat):
        started = time.perf_counter()
        described = describe_shard.map(planned)
        images = combine([future.result() for future in described])
        best = min(best, time.perf_counter() - started)
    return best, images


@app.command()
def main(
    workers: Annotated[list[int] | None, typer.Option(help="worker counts (repeatable)")] = None,
    shard_images: Annotated[
        int, typer.Option(help="images per shard task (default: runner.shard_images)")
    ] = RunnerConfig().shard_images,
    repeat: Annotated[int, typer.Option(help="rounds per worker count (best kept)")] = 2,
) -> None:
    counts = workers or [1, 2]
    entries = all_entries(SHARED)
    planned = shards(entries, shard_images)
    print(f"{len(entries)} images of {SHARED} in {len(planned)} shards of {shard_images}")
    started = time.perf_counter()
    reference = combine([describe_entries(entries)])
    one_process = time.perf_counter() - started
    print(f"one process, no Dask (the default runner's path): {one_process:.1f} s")
    seconds: dict[int, float] = {}
    with temporary_settings({PREFECT_API_URL: prefect_api_url()}):
        for count in counts:
            runner = task_runner(RunnerConfig(task_runner="dask", dask_workers=count))
            best, images = ingest_rounds.with_options(task_runner=runner)(planned, repeat)
            pd.testing.assert_frame_equal(images, reference)  # the same table, in order
            seconds[count] = best
    print(f"\ncpu: {os.cpu_count()} cores; {len(entries)} images, shards of {shard_images}")
    print("workers  seconds  images/s  speed-up over 1 worker")
    for count, value in seconds.items():
        ratio = seconds[counts[0]] / value if counts[0] == 1 else float("nan")
        print(f"{count:>7}  {value:7.1f}  {len(entries) / value:8.1f}  {ratio:6.2f}x")


if __name__ == "__main__":
    app()
