"""BentoML service for the gated chest X-ray classifier.

Imports only ``cxr.preprocessing`` and ``cxr.model_store`` (no Prefect, no training
code), so a served prediction goes through exactly the preprocessing of training.
Model: ``CXR_MODEL_TAG`` (default ``cxr-classifier:latest``).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import bentoml
import numpy as np

from cxr.model_store import load_model
from cxr.preprocessing import ImageDecodeError, preprocess_image

MODEL_TAG = os.environ.get("CXR_MODEL_TAG", "cxr-classifier:latest")


@bentoml.service(name="cxr-classifier-service", traffic={"timeout": 60})
class XRayClassifier:
    """Loads the packaged model once; predicts P(COVID) for one image."""

    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.packaged = load_model(str(self.model_ref.tag))

    @bentoml.api
    def predict(self, image: Path) -> dict:
        """One PNG or JPEG chest X-ray -> COVID probability and label."""
        try:
            x = preprocess_image(Path(image).read_bytes(), self.packaged.image_size)
        except ImageDecodeError as error:
            raise bentoml.exceptions.InvalidArgument(str(error)) from error
        probability = float(np.asarray(self.packaged.model(x[None], training=False))[0, 0])
        threshold = self.packaged.decision_threshold
        return {
            "covid_probability": probability,
            "label": self.packaged.classes[int(probability >= threshold)],
            "threshold": threshold,
            "model_tag": self.packaged.tag,
            "request_id": uuid.uuid4().hex,
        }
