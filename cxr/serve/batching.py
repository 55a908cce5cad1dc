"""The model in the HTTP worker's own process, behind BentoML's adaptive batching.

A separate model runner service costs every request a second HTTP hop: pickling, the
runner's middlewares (traffic metrics, tracing, access log) and its event loop, on the
same cores the model needs. :class:`LocalModel` runs the model in the front worker
instead and lets concurrent requests share one forward pass through the dispatcher
BentoML's batchable APIs use (``CorkDispatcher``: same ``max_batch_size``, same
``max_latency_ms`` shedding with a 503), and records each batch in BentoML's
``bentoml_service_adaptive_batch_size`` histogram at ``/metrics`` as a batchable API
would (``method_name="infer"``). Unlike a batchable API, it dispatches up to
``batches_in_flight`` batches at once (the dispatcher's ``shared_sema``): with one, the
cores idle while the front answers a batch and gathers the next; with two, each with
half the cores, one runs while the next is gathered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import numpy as np
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.context import server_context
from bentoml._internal.marshal.dispatcher import CorkDispatcher, NonBlockSema
from bentoml._internal.utils.metrics import exponential_buckets
from bentoml.exceptions import ServiceUnavailable

from cxr.core.inference import Predictor
from cxr.core.model_store import load_model
from cxr.core.ood import verdicts
from cxr.serve.scale import limit_threads

Rows = Callable[[np.ndarray], np.ndarray]


@functools.cache  # one per process: Prometheus refuses a second of the same name
def _batch_histogram(max_batch_size: int) -> Any:
    """BentoML's ``bentoml_service_adaptive_batch_size`` histogram, as a batchable API
    registers it."""
    return BentoMLContainer.metrics_client.get().Histogram(
        namespace="bentoml_service",
        name="adaptive_batch_size",
        documentation="Service adaptive batch size",
        labelnames=[
            "runner_name",
            "worker_index",
            "method_name",
            "service_version",
            "service_name",
        ],  # fmt: skip
        buckets=exponential_buckets(1, 2, max_batch_size),
    )


def _overloaded() -> Any:
    raise ServiceUnavailable("the model is overloaded: a request waited past max_latency_ms")


class LocalModel:
    """``rows(batch)`` (one output row per image) run in a worker thread, at most
    ``in_flight`` batches at a time; with ``batching``, concurrent calls are merged into
    batches of at most ``max_batch_size`` images."""

    def __init__(
        self,
        rows: Rows,
        batching: bool,
        max_batch_size: int,
        max_latency_ms: int,
        service_name: str,
        in_flight: int = 1,
    ) -> None:
        self.rows = rows
        self.batching = batching
        self.service_name = service_name
        self._in_flight = anyio.CapacityLimiter(in_flight)
        self._dispatch = CorkDispatcher(
            shared_sema=NonBlockSema(in_flight),  # batches dispatched at once
            max_latency_in_ms=max_latency_ms,
            max_batch_size=max_batch_size,
            fallback=_overloaded,
            get_batch_size=len,
            batch_dim=(0, 0),
        )(self._batch)
        self._histogram = _batch_histogram(max_batch_size)

    async def _run(self, batch: np.ndarray) -> np.ndarray:
        return await anyio.to_thread.run_sync(self.rows, batch, limiter=self._in_flight)

    async def _batch(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One forward pass over the dispatcher's queued inputs, split back per input."""
        self._histogram.labels(
            runner_name=self.service_name,
            worker_index=server_context.worker_index,
            method_name="infer",
            service_version=server_context.bento_version,
            service_name=server_context.bento_name,
        ).observe(len(inputs))
        rows = await self._run(np.concatenate(inputs) if len(inputs) > 1 else inputs[0])
        return np.split(rows, np.cumsum([len(x) for x in inputs])[:-1])

    async def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The output rows of ``batch`` (N, S, S, 3): (N, columns)."""
        if not self.batching:
            return await self._run(batch)
        return await self._dispatch(batch)


class ServedModel:
    """The packaged model and its out-of-distribution detector, compiled and warmed up
    for every padded batch size (no request pays for compilation)."""

    def __init__(
        self, tag: str, max_batch_size: int, threads: int | None, in_flight: int = 1
    ) -> None:
        limit_threads(threads, in_flight)  # before the model's first operation
        self.packaged = load_model(tag)
        self.detector = self.packaged.detector  # None: packaged before the OOD check
        layers = self.detector.layers if self.detector else ()
        self.predict = Predictor(self.packaged.model, max_batch_size, layers)
        self.predict.warm_up(self.packaged.image_size)  # then unpadded on TensorFlow

    def rows(self, batch: np.ndarray) -> np.ndarray:
        """One row per preprocessed image of ``batch``: P(COVID), OOD score, in
        distribution (1.0/0.0); the last two NaN for a model without a detector. Features
        and probability come out of one compiled forward pass."""
        probabilities, features = self.predict.outputs(batch)
        scores, flags = verdicts(self.detector, features, len(probabilities))
        return np.stack([probabilities.astype(np.float64), scores, flags], axis=1)
