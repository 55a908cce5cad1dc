"""Serving scale settings: what the service's ``@bentoml.service`` decorators and the
model runner's start take from ``ServeConfig`` (workers, CPU threads, GPUs)."""

from __future__ import annotations

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


def limit_threads(threads: int | None) -> None:
    """Size TensorFlow's thread pools of this process: ``threads`` intra-op threads and
    one inter-op thread (None: TensorFlow's default). Call it before the first
    TensorFlow operation: the pools are fixed once TensorFlow has started."""
    if threads is None:
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
