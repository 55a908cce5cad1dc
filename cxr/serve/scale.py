"""Serving scale settings: what the service's ``@bentoml.service`` decorators and the
model runner's start take from ``ServeConfig`` (workers, CPU threads, GPUs)."""

from __future__ import annotations

import os
from typing import Any

from cxr.core.config import ServeConfig


def model_resources(serve: ServeConfig) -> dict[str, Any]:
    """BentoML ``resources`` of the model runner. ``gpu``: BentoML gives the runner's
    workers those GPUs (CUDA_VISIBLE_DEVICES); ``cpu``: the cores a scheduler (BentoCloud,
    a cluster) reserves for it. Empty: BentoML's defaults (all devices visible)."""
    resources: dict[str, Any] = {}
    if serve.model_threads is not None:
        resources["cpu"] = str(serve.model_threads)
    if serve.model_gpus:
        resources["gpu"] = serve.model_gpus
    return resources


def limit_threads(threads: int | None, inter_op: int = 1) -> None:
    """Size TensorFlow's thread pools of this process: ``threads`` intra-op threads and
    ``inter_op`` inter-op threads (threads None: TensorFlow's defaults). Call it before
    the first TensorFlow operation: the pools are fixed once TensorFlow has started."""
    if threads is None:
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def front_model_threads(serve: ServeConfig, cores: int | None = None) -> int | None:
    """Intra-op threads of the model in a front process: ``model_threads`` when set,
    else this process's cores shared among ``batches_in_flight`` batches (None, for
    TensorFlow's default, with one batch in flight). On 2 AVX2 cores, two batches of one
    thread each served 1.35x the requests of one batch on both cores
    (docs/BENCHMARKS.md)."""
    if serve.model_threads is not None or serve.batches_in_flight == 1:
        return serve.model_threads
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, cores // serve.batches_in_flight)
