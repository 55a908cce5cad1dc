"""The training flow on a local Dask cluster (``cxr train --task-runner dask``): ingestion
in shards across the workers, the independent models at once, the same run as the default
runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.real_data]
# The gate judges the LSTM baseline: 1 epoch at 32 px stays far below its 0.95, so both
# runs are rejected (exit code 4) and nothing is packaged. Each model starts from the
# seed, whatever else trains: the default runner trains the LSTM alone, the Dask run all
# three (the ResNet50 baseline and the LSTM at once, then the hybrid from the baseline).
ARGS = ["--profile", "demo", "--image-size", "32", "--epochs", "1"]
ARGS += ["--set", "data.min_images_per_class=5", "--set", "train.fine_tune_epochs=1"]
ARGS += ["--set", "gate.model=lstm", "--set", "packaging.model_name=cxr-dask-check"]


@pytest.fixture
def dask_client() -> Iterator[object]:
    """A client of a local Dask cluster of 2 worker processes, one thread each."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _intra_op_threads() -> int:
    """TensorFlow's intra-op threads of the process this runs in (a Dask worker)."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads()


def _task_runs(flow_run_id: str) -> dict[str, list]:
    """The flow run's task runs by name: the training's (``train-lstm``), the others'
    without the suffix Prefect adds (``ingest-shard``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flt = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
    with get_client(sync_client=True) as client:
        found = client.read_task_runs(flow_run_filter=flt)
    by_name: dict[str, list] = {}
    for task_run in found:
        name = task_run.name
        key = name if name.startswith("train-") else name.rsplit("-", 1)[0]
        by_name.setdefault(key, []).append(task_run)
    return by_name


def test_dask_runner_gives_the_default_runners_split_hashes_and_gate(
    prefect_server: str, small_real_dataset: Path, dask_client, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    base = ["train", "--data-dir", str(small_real_dataset), *ARGS, "--runs-dir", str(runs)]
    local = run_cli(*base, "--run-id", "local", "--model", "lstm", api_url=prefect_server)
    assert local.returncode == 4, local.stderr[-3000:]
    address = dask_client.scheduler.address
    on_dask = ["--task-runner", "dask", "--dask-address", address]
    on_dask += ["--set", "runner.shard_images=16", "--set", "runner.model_threads=1"]
    dask = run_cli(*base, "--run-id", "dask", *on_dask, api_url=prefect_server)
    assert dask.returncode == 4, dask.stderr[-3000:]

    # the same images, hashes and statistics in the same order, the same split and gate
    for name in ("ingestion/images.csv", "ingestion/unreadable.csv", "split.csv"):
        assert (runs / "dask" / name).read_text() == (runs / "local" / name).read_text(), name
    metrics = {r: json.loads((runs / r / "metrics.json").read_text()) for r in ("local", "dask")}
    assert metrics["dask"]["gate"] == metrics["local"]["gate"]
    assert metrics["dask"]["gate"]["passed"] is False
    assert metrics["dask"]["dataset_fingerprint"] == metrics["local"]["dataset_fingerprint"]
    assert "gate REJECTED" in dask.stderr

    # 60 images in shards of 16: four shard tasks; the ResNet50 baseline and the LSTM
    # trained at once, the hybrid (which starts from the baseline's backbone) after it
    tasks = _task_runs(metrics["dask"]["prefect_flow_run_id"])
    assert len(tasks["ingest-shard"]) == 4 and len(tasks["ingest-plan"]) == 1
    (resnet50,), (lstm,) = tasks["train-resnet50"], tasks["train-lstm"]
    (hybrid,) = tasks["train-resnet50_lstm"]
    assert resnet50.start_time < lstm.end_time and lstm.start_time < resnet50.end_time
    assert hybrid.start_time >= resnet50.end_time
    stages = ["ingest-plan", "ingest-shard", "ingest", "preprocess", "train-resnet50"]
    stages += ["train-lstm", "train-resnet50_lstm"]
    assert all(run.state.is_completed() for stage in stages for run in tasks[stage])
    # each worker process sized TensorFlow's pool to runner.model_threads
    assert set(dask_client.run(_intra_op_threads).values()) == {1}
