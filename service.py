"""BentoML service for the gated chest X-ray classifier.

``XRayClassifier`` (HTTP front: checks the upload, decodes and preprocesses it, logs the
answer) runs the model in its own process by default (``cxr.serve.batching``: adaptive
batching lets concurrent requests share one forward pass, with no second HTTP hop); one
process unless ``CXR_SERVE__FRONT_WORKERS`` says more, each with its model. With
``CXR_SERVE__MODEL_WORKERS`` > 1 or ``CXR_SERVE__MODEL_GPUS`` the model runs in a service
of its own instead, ``ModelRunner`` (BentoML's batchable API), called by the fronts.

Imports only ``cxr`` modules shared with training (config, preprocessing, image
statistics, model store, prediction log): no Prefect, no training code.
Settings: ``CXR_SERVE__*`` environment variables (see ``cxr.config.ServeConfig``).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import anyio
import bentoml
import numpy as np
from bentoml.validators import ContentType
from PIL import Image
from starlette.responses import JSONResponse, Response

from cxr.core.calibration import calibrate
from cxr.core.config import load_settings
from cxr.core.dicom import NotARadiographError, UnsupportedTransferSyntaxError, radiograph_refusal
from cxr.core.explain import heat_from_probabilities, occluded_inputs, overlay_png
from cxr.core.image_stats import image_statistics
from cxr.core.model_store import read_serving_info
from cxr.core.ood import (
    DETECTOR_FILE,
    OUT_OF_DISTRIBUTION,
    as_answer,
    load_detector,
    refuse_colour,
)
from cxr.core.preprocessing import (
    ImageDecodeError,
    ImageTooLargeError,
    decode_image,
    to_model_input,
)
from cxr.core.production import bento_model_tag, resolve_tag
from cxr.serve.batching import LocalModel, ServedModel
from cxr.serve.http_guards import (
    BearerTokenAuth,
    BodySizeLimit,
    default_host,
    install_strict_multipart,
)
from cxr.serve.prediction_log import PredictionWriter, create_log_engine, log_rejection
from cxr.serve.scale import front_model_threads, model_resources

SERVE = load_settings().serve
# A built bento serves the model it was built around (unless CXR_SERVE__MODEL_TAG says
# otherwise); from a checkout, name:production is resolved once, at start: a promotion
# reaches a running service when it is restarted (see cxr.core.production)
MODEL_TAG = (
    None if "CXR_SERVE__MODEL_TAG" in os.environ else bento_model_tag(Path(__file__))
) or resolve_tag(SERVE.model_tag)
# one model runner process and no GPU: the model runs in each HTTP front worker
MODEL_IN_FRONT = SERVE.model_workers == 1 and not SERVE.model_gpus
logger = logging.getLogger("bentoml.service")
install_strict_multipart()


class Rejected(Exception):
    """A request the service answers with a 4xx status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@bentoml.service(
    name="cxr-model",
    traffic={"timeout": 60},
    workers=SERVE.model_workers,
    resources=model_resources(SERVE),  # GPUs, reserved cores
)
class ModelRunner:
    """Holds the Keras model and its out-of-distribution detector; ``infer`` takes
    preprocessed batches."""

    stored = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.model = ServedModel(str(self.stored.tag), SERVE.max_batch_size, SERVE.model_threads)

    @bentoml.api(
        batchable=SERVE.batching,
        batch_dim=0,
        max_batch_size=SERVE.max_batch_size,
        max_latency_ms=SERVE.max_latency_ms,
    )
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``ServedModel.rows`` of a batch of preprocessed images."""
        return self.model.rows(batch)


@bentoml.service(
    name="cxr-classifier",
    traffic={"timeout": 60},
    workers=SERVE.front_workers,
    http={"host": default_host(SERVE.api_token)},  # --host / BENTOML_HOST win
)
class XRayClassifier:
    """POST /predict with one PNG, JPEG or DICOM (CR/DX) chest X-ray; POST /explain for a
    heat map of what drove the score. Every /predict answer is logged."""

    stored = bentoml.models.BentoModel(MODEL_TAG)
    if not MODEL_IN_FRONT:
        runner = bentoml.depends(ModelRunner)

    def __init__(self) -> None:
        info = read_serving_info(self.stored)
        self.model_tag = str(self.stored.tag)
        self.image_size = int(info["image_size"])
        self.threshold = float(info["cutoff"])  # answered as "threshold"
        self.temperature = float(info["temperature"])  # 1.0: packaged before calibration
        self.classes = list(info["classes"])
        detector = load_detector(Path(self.stored.path_of(DETECTOR_FILE)))
        self.ood = detector.summary() if detector else None  # None: packaged before the check
        self.log = create_log_engine(SERVE.prediction_log_url)
        self.writer = PredictionWriter(self.log)  # group commit; each answer waits for its row
        if MODEL_IN_FRONT:
            served = ServedModel(
                self.model_tag, SERVE.max_batch_size, front_model_threads(SERVE),
                SERVE.batches_in_flight,
            )  # fmt: skip
            self.model = LocalModel(
                served.rows, SERVE.batching, SERVE.max_batch_size, SERVE.max_latency_ms,
                "cxr-classifier", SERVE.batches_in_flight,
            )  # fmt: skip
        self.synthetic = bool(self.stored.info.metadata.get("synthetic", False))
        if self.synthetic:
            logger.warning(
                "%s was trained on SYNTHETIC demo data: not a clinical model", self.model_tag
            )

    def _prepare(self, image: Path) -> tuple[np.ndarray, float, dict[str, Any]]:
        """Check and decode the upload (PNG, JPEG or a DICOM CR/DX film); return the model
        input and the image's statistics. Of a DICOM header only modality, view position,
        manufacturer and bits stored are kept: never a patient identifier."""
        size = image.stat().st_size
        if size == 0:
            raise Rejected(
                400, "empty upload: send one PNG, JPEG or DICOM file as form field 'image'"
            )  # fmt: skip
        if size > SERVE.max_upload_bytes:
            raise Rejected(413, f"upload of {size} bytes is over {SERVE.max_upload_bytes}")
        try:
            decoded = decode_image(image.read_bytes(), SERVE.max_image_pixels)
        except ImageTooLargeError as error:
            raise Rejected(413, str(error)) from error
        except UnsupportedTransferSyntaxError as error:
            raise Rejected(415, str(error)) from error
        except NotARadiographError as error:
            raise Rejected(422, str(error)) from error
        except ImageDecodeError as error:
            raise Rejected(400, f"{error}; send a PNG, JPEG or DICOM chest X-ray") from error
        gray, header = decoded.gray, decoded.dicom
        if header is not None and (refusal := radiograph_refusal(header)):
            raise Rejected(422, refusal)
        height, width = gray.shape
        if min(height, width) < SERVE.min_image_side:
            raise Rejected(
                422, f"image of {width}x{height} is too small for a radiograph "
                f"(min side {SERVE.min_image_side})"
            )  # fmt: skip
        stats: dict[str, Any] = {"width": width, "height": height, "mode": decoded.mode}
        stats["bytes"] = size
        if header is not None:
            stats |= {
                "modality": header.modality, "view_position": header.view_position,
                "manufacturer": header.manufacturer, "bits_stored": header.bits_stored,
            }  # fmt: skip
        model_input = to_model_input(gray, self.image_size)
        return model_input, decoded.colour, {**stats, **image_statistics(gray)}

    async def _rows(self, chunk: np.ndarray, attempts: int = 3) -> np.ndarray:
        """The model's rows (P(COVID), OOD score, in distribution) of a batch of at most
        ``max_batch_size`` images: from the model in this process, or from the model
        runner; inference is idempotent, so a keep-alive connection the runner closed
        under our feet (aiohttp ServerDisconnectedError, a known BentoML issue:
        github.com/bentoml/BentoML/issues/4238) is retried."""
        if MODEL_IN_FRONT:
            return await self.model(chunk)
        for attempt in range(1, attempts + 1):
            try:
                answer = await self.runner.to_async.infer(chunk)
                return np.asarray(answer, np.float64).reshape(len(chunk), -1)
            except aiohttp.ClientConnectionError as error:
                if attempt == attempts:
                    raise
                logger.warning("model runner connection lost (%s); retrying", error)
        raise AssertionError("unreachable")

    async def _infer(self, x: np.ndarray, colour: float) -> tuple[float, float | None, bool | None]:
        """P(COVID), OOD score and in-distribution flag (None without a detector; False
        for a colour image)."""
        row = (await self._rows(x[None]))[0]
        score, flag = as_answer(row[1]), as_answer(refuse_colour(row[2], colour))
        return float(row[0]), score, None if flag is None else bool(flag)

    @bentoml.api
    async def predict(self, image: Path, ctx: bentoml.Context) -> dict:
        """COVID probability, label (``out_of_distribution`` when the image does not look
        like the training population), in_distribution and ood_score (null for a model
        packaged without the check), decision threshold, model tag and request id. Answered
        as a ready JSONResponse: BentoML would otherwise rebuild the output model's JSON
        schema for every answer (a tenth of the service's Python time under load)."""
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        try:
            x, colour, stats = await anyio.to_thread.run_sync(self._prepare, Path(image))
        except Rejected as rejected:
            size = Path(image).stat().st_size if Path(image).exists() else 0
            await anyio.to_thread.run_sync(
                log_rejection, self.log, request_id, rejected.status, rejected.message, size
            )
            ctx.response.status_code = rejected.status
            return JSONResponse({"error": rejected.message, "request_id": request_id})
        probability, ood_score, in_distribution = await self._infer(x, colour)
        probability = float(calibrate(probability, self.temperature))  # the cut-off's scale
        verdict = self.classes[int(probability >= self.threshold)]
        answer = {
            "covid_probability": probability,
            "label": OUT_OF_DISTRIBUTION if in_distribution is False else verdict,
            "in_distribution": in_distribution,
            "ood_score": ood_score,
            "threshold": self.threshold,
            "model_tag": self.model_tag,
            "request_id": request_id,
        }
        latency_ms = (time.perf_counter() - started) * 1000
        row = {k: v for k, v in answer.items() if k != "request_id"} | stats
        await self.writer.log({**row, "request_id": request_id, "latency_ms": latency_ms})
        return JSONResponse(answer)

    async def _infer_rows(self, batch: np.ndarray) -> np.ndarray:
        """The model's rows (P(COVID) first) of every image of ``batch``, in chunks of at
        most ``max_batch_size``: (N, columns)."""
        size = SERVE.max_batch_size
        chunks = [batch[start : start + size] for start in range(0, len(batch), size)]
        return np.concatenate([await self._rows(chunk) for chunk in chunks])

    @bentoml.api(route="/explain")
    async def explain(
        self, image: Path, ctx: bentoml.Context
    ) -> Annotated[Image.Image, ContentType("image/png")]:
        """PNG heat map of the regions that drove the COVID probability, over the model
        input (occlusion sensitivity: 65 forward passes, see ``cxr.core.explain``); the
        answer's headers carry P(COVID), label and in-distribution flag, as /predict. Same
        upload and same 4xx answers as /predict; not written to the prediction log."""
        request_id = uuid.uuid4().hex
        try:
            x, colour, _ = await anyio.to_thread.run_sync(self._prepare, Path(image))
        except Rejected as rejected:
            ctx.response.status_code = rejected.status
            return JSONResponse({"error": rejected.message, "request_id": request_id})
        rows = await self._infer_rows(occluded_inputs(x))
        calibrated = calibrate(rows[:, 0], self.temperature)  # as /predict answers
        explanation = heat_from_probabilities(calibrated, x.shape[0], self.threshold)
        png = await anyio.to_thread.run_sync(overlay_png, x, explanation)
        share = explanation.border_share
        flag = as_answer(refuse_colour(rows[0, 2], colour)) if rows.shape[1] > 2 else None
        verdict = self.classes[int(explanation.predicted_covid)]
        headers = {
            "X-Covid-Probability": f"{explanation.covid_probability:.6f}",
            "X-Label": OUT_OF_DISTRIBUTION if flag == 0 else verdict,
            "X-In-Distribution": "unknown" if flag is None else str(bool(flag)).lower(),
            "X-Border-Heat-Share": "none" if share is None else f"{share:.4f}",
            "X-Model-Tag": self.model_tag,
            "X-Request-Id": request_id,
        }
        return Response(png, media_type="image/png", headers=headers)

    @bentoml.api(route="/info")
    def info(self) -> dict:
        """The served model and the service's limits."""
        return {
            "model_tag": self.model_tag,
            "image_size": self.image_size,
            "threshold": self.threshold,
            "temperature": self.temperature,
            "classes": self.classes,
            "trained_on_synthetic_demo_data": self.synthetic,
            "ood_check": self.ood,
            "batching": SERVE.batching,
            "max_upload_bytes": SERVE.max_upload_bytes,
        }


# outermost first: a client without the token gets 401 before any byte of its body is read
XRayClassifier.add_asgi_middleware(BearerTokenAuth, token=SERVE.api_token)
XRayClassifier.add_asgi_middleware(BodySizeLimit, max_bytes=SERVE.max_upload_bytes + 64 * 1024)
