"""BentoML service for the gated chest X-ray classifier.

Two services, one process each: ``XRayClassifier`` (HTTP front: checks the upload,
decodes and preprocesses it, logs the answer) calls ``ModelRunner`` (loads the model
once; adaptive batching lets concurrent requests share one forward pass).

Imports only ``cxr`` modules shared with training (config, preprocessing, image
statistics, model store, prediction log): no Prefect, no training code.
Settings: ``CXR_SERVE__*`` environment variables (see ``cxr.config.ServeConfig``).
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import bentoml
import numpy as np

from cxr.core.config import load_settings
from cxr.core.image_stats import image_statistics
from cxr.core.inference import Predictor
from cxr.core.model_store import load_model, read_serving_info
from cxr.core.preprocessing import (
    ImageDecodeError,
    ImageTooLargeError,
    decode_grayscale,
    to_model_input,
)
from cxr.serve.http_guards import BodySizeLimit, install_strict_multipart
from cxr.serve.prediction_log import create_log_engine, log_prediction, log_rejection

SERVE = load_settings().serve
logger = logging.getLogger("bentoml.service")
install_strict_multipart()


class Rejected(Exception):
    """A request the service answers with a 4xx status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@bentoml.service(name="cxr-model", traffic={"timeout": 60})
class ModelRunner:
    """Holds the Keras model; ``infer`` takes preprocessed batches."""

    stored = bentoml.models.BentoModel(SERVE.model_tag)

    def __init__(self) -> None:
        self.packaged = load_model(str(self.stored.tag))
        self.predict = Predictor(self.packaged.model, SERVE.max_batch_size)
        self.predict.warm_up(self.packaged.image_size)  # no request pays for compilation

    @bentoml.api(
        batchable=SERVE.batching,
        batch_dim=0,
        max_batch_size=SERVE.max_batch_size,
        max_latency_ms=SERVE.max_latency_ms,
    )
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """P(COVID) for each preprocessed image of the batch."""
        return self.predict(batch)


@bentoml.service(name="cxr-classifier", traffic={"timeout": 60})
class XRayClassifier:
    """POST /predict with one PNG or JPEG chest X-ray; every answer is logged."""

    stored = bentoml.models.BentoModel(SERVE.model_tag)
    runner = bentoml.depends(ModelRunner)

    def __init__(self) -> None:
        info = read_serving_info(self.stored)
        self.model_tag = str(self.stored.tag)
        self.image_size = int(info["image_size"])
        self.threshold = float(info["cutoff"])  # answered as "threshold"
        self.classes = list(info["classes"])
        self.log = create_log_engine(SERVE.prediction_log_url)
        self.synthetic = bool(self.stored.info.metadata.get("synthetic", False))
        if self.synthetic:
            logger.warning(
                "%s was trained on SYNTHETIC demo data: not a clinical model", self.model_tag
            )

    def _prepare(self, image: Path) -> tuple[np.ndarray, dict[str, Any]]:
        """Check and decode the upload; return the model input and the image's statistics."""
        size = image.stat().st_size
        if size == 0:
            raise Rejected(400, "empty upload: send one PNG or JPEG file as form field 'image'")
        if size > SERVE.max_upload_bytes:
            raise Rejected(413, f"upload of {size} bytes is over {SERVE.max_upload_bytes}")
        try:
            gray, mode = decode_grayscale(image.read_bytes(), SERVE.max_image_pixels)
        except ImageTooLargeError as error:
            raise Rejected(413, str(error)) from error
        except ImageDecodeError as error:
            raise Rejected(400, f"{error}; send a PNG or JPEG chest X-ray") from error
        height, width = gray.shape
        if min(height, width) < SERVE.min_image_side:
            raise Rejected(
                422, f"image of {width}x{height} is too small for a radiograph "
                f"(min side {SERVE.min_image_side})"
            )  # fmt: skip
        stats = {"width": width, "height": height, "mode": mode, "bytes": size}
        return to_model_input(gray, self.image_size), {
            **stats,
            **image_statistics(gray),
        }

    async def _infer(self, x: np.ndarray, attempts: int = 3) -> float:
        """Call the model runner; inference is idempotent, so a keep-alive connection the
        runner closed under our feet (aiohttp ServerDisconnectedError, a known BentoML
        issue: github.com/bentoml/BentoML/issues/4238) is retried."""
        for attempt in range(1, attempts + 1):
            try:
                return float((await self.runner.to_async.infer(x[None]))[0])
            except aiohttp.ClientConnectionError as error:
                if attempt == attempts:
                    raise
                logger.warning("model runner connection lost (%s); retrying", error)
        raise AssertionError("unreachable")

    @bentoml.api
    async def predict(self, image: Path, ctx: bentoml.Context) -> dict:
        """COVID probability, label, decision threshold, model tag and request id."""
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        try:
            x, stats = await anyio.to_thread.run_sync(self._prepare, Path(image))
        except Rejected as rejected:
            size = Path(image).stat().st_size if Path(image).exists() else 0
            await anyio.to_thread.run_sync(
                log_rejection, self.log, request_id, rejected.status, rejected.message, size
            )
            ctx.response.status_code = rejected.status
            return {"error": rejected.message, "request_id": request_id}
        probability = await self._infer(x)
        answer = {
            "covid_probability": probability,
            "label": self.classes[int(probability >= self.threshold)],
            "threshold": self.threshold,
            "model_tag": self.model_tag,
            "request_id": request_id,
        }
        latency_ms = (time.perf_counter() - started) * 1000
        row = {k: v for k, v in answer.items() if k != "request_id"} | stats
        await anyio.to_thread.run_sync(
            log_prediction, self.log, {**row, "request_id": request_id, "latency_ms": latency_ms}
        )
        return answer

    @bentoml.api(route="/info")
    def info(self) -> dict:
        """The served model and the service's limits."""
        return {
            "model_tag": self.model_tag,
            "image_size": self.image_size,
            "threshold": self.threshold,
            "classes": self.classes,
            "trained_on_synthetic_demo_data": self.synthetic,
            "batching": SERVE.batching,
            "max_upload_bytes": SERVE.max_upload_bytes,
        }


XRayClassifier.add_asgi_middleware(BodySizeLimit, max_bytes=SERVE.max_upload_bytes + 64 * 1024)
