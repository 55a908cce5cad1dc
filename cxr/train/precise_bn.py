"""Precise batch-norm statistics: re-estimate the moving mean and variance of every
training batch-norm layer from un-augmented training images before each validation.

During training a batch-norm layer normalises with the statistics of the current
(augmented) batch and keeps a moving average of them for inference. With a fast-moving
average the inference network changes from epoch to epoch with the last few batches; with
averaged (EMA) weights the moving statistics belong to other weights altogether. Both
make the validation numbers, and the checkpoint they pick, noisy. Re-estimating the
statistics for the weights being validated, as an equal-weight average over many batches
(Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"), removes both effects.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

BACKBONE = "resnet50"  # the sub-model that holds the batch-norm layers


def trainable_batch_norms(backbone: keras.Model) -> list[layers.BatchNormalization]:
    """The batch-norm layers whose statistics training changes (frozen ones keep theirs)."""
    return [
        layer
        for layer in backbone.layers
        if isinstance(layer, layers.BatchNormalization) and layer.trainable
    ]


def recalibrate_batch_norm(model: keras.Model, images: np.ndarray, batch_size: int) -> int:
    """Set the moving statistics of ``model``'s trainable batch-norm layers to the mean
    over ``images`` (in batches) of the batch statistics; returns how many batches."""
    if BACKBONE not in {layer.name for layer in model.layers}:
        return 0  # no batch norm (the LSTM baseline)
    backbone = model.get_layer(BACKBONE)
    norms = trainable_batch_norms(backbone)
    if not norms:
        return 0
    momenta = [layer.momentum for layer in norms]
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches[:1]
    try:
        for i, batch in enumerate(batches):
            for layer in norms:  # i/(i+1): a running equal-weight mean of the batches
                layer.momentum = i / (i + 1)
            backbone(batch, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    return len(batches)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Re-estimate batch-norm statistics before each validation (and so before the
    checkpoint saves them). Place it after ``SwapEMAWeights`` so that the statistics
    belong to the averaged weights that are validated and saved."""

    def __init__(self, images: np.ndarray, batch_size: int) -> None:
        super().__init__()
        self.images = images
        self.batch_size = batch_size

    def on_test_begin(self, logs: dict | None = None) -> None:
        recalibrate_batch_norm(self.model, self.images, self.batch_size)
