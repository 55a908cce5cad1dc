"""Compiled batch inference, shared by the service and every batch prediction of the product.

Eager calls (``model(x)``) pay Python overhead per layer on every request; the backend's
compiled predict step (``predict_on_batch``: a ``tf.function`` on TensorFlow, a jitted
function on JAX) does not. Each distinct batch shape compiles once, so batches are padded
up to a few fixed sizes, and :meth:`Predictor.warm_up` compiles them all before the first
request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

BATCH_SIZES = (1, 2, 4, 8, 16, 32)


class Predictor:
    """P(COVID) of preprocessed images through the model's compiled predict step."""

    def __init__(self, model: keras.Model, max_batch_size: int = 32) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.model = model
        self.sizes = tuple(s for s in BATCH_SIZES if s < max_batch_size) + (max_batch_size,)

    def warm_up(self, image_size: int) -> None:
        """Compile every padded batch size now, so that no request pays for it."""
        for size in self.sizes:
            self._predict(np.zeros((size, image_size, image_size, 3), np.float32))

    def _predict(self, padded: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(padded), np.float32).reshape(-1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """One probability per image of ``x`` (N, S, S, 3); any N, in chunks of the
        largest size, each padded with zeros to the next compiled size."""
        largest = self.sizes[-1]
        out = []
        for start in range(0, len(x), largest):
            chunk = np.asarray(x[start : start + largest], np.float32)
            size = next(s for s in self.sizes if s >= len(chunk))
            padded = np.zeros((size, *chunk.shape[1:]), np.float32)
            padded[: len(chunk)] = chunk
            out.append(self._predict(padded)[: len(chunk)])
        return np.concatenate(out) if out else np.empty(0, np.float32)
