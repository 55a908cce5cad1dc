"""The training flow on a Dask cluster (Prefect's ``DaskTaskRunner``, prefect-dask): the
runner the ``runner`` settings select, the TensorFlow threads of each worker process, and
which model's training waits for which."""

from __future__ import annotations

import logging
import os
from typing import Any

from distributed import Worker, WorkerPlugin
from prefect.settings import PREFECT_API_URL
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner

from cxr.core.config import ModelName, RunnerConfig, TrainConfig
from cxr.serve.scale import limit_threads

logger = logging.getLogger(__name__)


def task_runner(runner: RunnerConfig) -> TaskRunner | None:
    """The task runner of ``runner.task_runner``: None for local (the flow's own), or a
    ``DaskTaskRunner`` on the scheduler at ``runner.dask_address``, else on a local cluster
    of ``runner.dask_workers`` processes of one thread each (one task at a time: a shard
    or a model), started for the run and stopped after it."""
    if runner.task_runner == "local":
        return None
    if runner.dask_address:
        return DaskTaskRunner(address=runner.dask_address)
    cluster: dict[str, Any] = {
        "n_workers": runner.dask_workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,  # no dashboard (needs bokeh); the Prefect UI shows the tasks
    }
    return DaskTaskRunner(cluster_kwargs=cluster)


def prefect_api_url() -> str:
    """The Prefect API the workers report their task runs to: the configured one
    (``PREFECT_API_URL``), or else Prefect's temporary server of this process, started now
    (the flow then uses the same one; without it, each worker would start its own)."""
    configured = PREFECT_API_URL.value()
    if configured:
        return configured
    from prefect.server.api.server import SubprocessASGIServer  # the server app: only here

    server = SubprocessASGIServer()  # one per process: the flow's client finds it running
    server.start()
    return server.api_url


def worker_threads(runner: RunnerConfig, cores: int | None = None) -> int:
    """TensorFlow intra-op threads of one worker process: ``runner.model_threads``, or the
    machine's cores shared by ``runner.dask_workers`` workers (at least 1)."""
    if runner.model_threads is not None:
        return runner.model_threads
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, cores // runner.dask_workers)


class TensorFlowThreads(WorkerPlugin):
    """Sizes TensorFlow's thread pools in every worker process of the cluster as it joins
    (``limit_threads``: ``threads`` intra-op, 1 inter-op), before a task starts TensorFlow,
    so models training at once on one machine share its cores instead of each taking all."""

    name = "cxr-tensorflow-threads"

    def __init__(self, runner: RunnerConfig) -> None:
        self.runner = runner

    def setup(self, worker: Worker) -> None:
        threads = worker_threads(self.runner)
        try:
            limit_threads(threads)
        except RuntimeError:  # TensorFlow already ran in this worker (an earlier run)
            import tensorflow as tf

            if tf.config.threading.get_intra_op_parallelism_threads() != threads:
                logger.warning(
                    "worker %s: TensorFlow already started with other thread pools; "
                    "restart the workers to use %d threads",
                    worker.address,
                    threads,
                )


def limit_worker_threads(runner: DaskTaskRunner, config: RunnerConfig) -> None:
    """Register :class:`TensorFlowThreads` on the cluster of a started ``runner``."""
    runner.client.register_plugin(TensorFlowThreads(config))


def waits_for(name: ModelName, config: TrainConfig) -> ModelName | None:
    """The model whose trained result the training of ``name`` starts from: the ResNet50
    baseline for the hybrid with ``train.hybrid_backbone_from_baseline``; else none, and
    the model trains at the same time as the others."""
    if (
        name == "resnet50_lstm"
        and config.hybrid_backbone_from_baseline
        and "resnet50" in config.models
    ):
        return "resnet50"
    return None
