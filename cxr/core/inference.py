"""Compiled batch inference, shared by the service and every batch prediction of the product.

Eager calls (``model(x)``) pay Python overhead per layer on every request; the backend's
compiled predict step (``predict_on_batch``: a ``tf.function`` on TensorFlow, a jitted
function on JAX) does not. Each distinct batch shape compiles once, so batches are padded
up to a few fixed sizes, and :meth:`Predictor.warm_up` compiles them all before the first
request.

With ``feature_layers`` the compiled model has two outputs, the probability and the
features the out-of-distribution check reads (:mod:`cxr.core.ood`), so both come out of
one forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

BATCH_SIZES = (1, 2, 4, 8, 16, 32)


INPUT_STATISTICS = "input_statistics"  # a tap: intensity statistics of the model input
HISTOGRAM_BINS = 16


def input_statistics(images: keras.KerasTensor) -> keras.KerasTensor:
    """Statistics of each model input (N, S, S, 3) in [0, 1], first channel: mean, standard
    deviation, the share of pixels in each of 16 equal intensity bins, the entropy of
    those shares (bits) and the share below 0.04 (black); (N, 20) float32."""
    import keras
    from keras import ops

    pixels = images.shape[1] * images.shape[2]
    gray = ops.reshape(ops.cast(images[..., 0], "float32"), (-1, pixels))
    bins = ops.cast(ops.clip(ops.floor(gray * HISTOGRAM_BINS), 0, HISTOGRAM_BINS - 1), "int32")
    shares = ops.mean(ops.one_hot(bins, HISTOGRAM_BINS), axis=1)
    entropy = -ops.sum(shares * ops.log(ops.maximum(shares, 1e-12)), axis=1) / float(np.log(2))
    dark = ops.mean(ops.cast(gray < 0.04, "float32"), axis=1)
    columns = [ops.mean(gray, axis=1)[:, None], ops.std(gray, axis=1)[:, None], shares,
               entropy[:, None], dark[:, None]]  # fmt: skip
    return keras.ops.concatenate(columns, axis=-1)


def _pooled(tensor: keras.KerasTensor) -> keras.KerasTensor:
    """Average a feature map over space (or a sequence over steps); float32."""
    import keras

    if len(tensor.shape) > 2:
        tensor = keras.ops.mean(tensor, axis=tuple(range(1, len(tensor.shape) - 1)))
    return keras.ops.cast(tensor, "float32")


def feature_model(model: keras.Model, layers: Sequence[str]) -> keras.Model:
    """A two-output model over ``model``'s own layers: (P(COVID), features). A name
    ``"<nested>/<layer>"`` taps the output of a layer inside a nested model (the ResNet50
    backbone's stages); any other name taps the input of that layer of ``model``. Taps
    are averaged over space or steps, cast to float32 and concatenated;
    ``INPUT_STATISTICS`` taps the input's intensity statistics. With nested taps,
    the chain of ``model``'s layers (the three networks are chains) is called again with
    the nested model exposing its inner outputs: same layers, same weights."""
    import keras

    nested = [name.split("/", 1) for name in layers if "/" in name]
    if not nested:
        taps = [
            input_statistics(model.inputs[0])
            if name == INPUT_STATISTICS
            else _pooled(model.get_layer(name).input)
            for name in layers
        ]
        features = taps[0] if len(taps) == 1 else keras.ops.concatenate(taps, axis=-1)
        return keras.Model(
            model.inputs, [model.outputs[0], features], name=f"{model.name}_features"
        )
    found: dict[str, keras.KerasTensor] = {}
    inputs = x = keras.Input(model.inputs[0].shape[1:], name="image")
    for layer in model.layers[1:]:
        inner = [part for outer, part in nested if outer == layer.name]
        found[layer.name] = x  # the input of each layer of the chain
        if inner:
            exposed = keras.Model(
                layer.inputs, [layer.outputs[0], *[layer.get_layer(n).output for n in inner]]
            )
            x, *maps = exposed(x)
            found.update({f"{layer.name}/{n}": m for n, m in zip(inner, maps, strict=True)})
        else:
            x = layer(x)
    taps = [
        input_statistics(inputs) if name == INPUT_STATISTICS else _pooled(found[name])
        for name in layers
    ]
    features = taps[0] if len(taps) == 1 else keras.ops.concatenate(taps, axis=-1)
    return keras.Model(inputs, [x, features], name=f"{model.name}_features")


class Predictor:
    """P(COVID) of preprocessed images (and their features, with ``feature_layers``)
    through the model's compiled predict step."""

    def __init__(
        self, model: keras.Model, max_batch_size: int = 32, feature_layers: Sequence[str] = ()
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.with_features = bool(feature_layers)
        self.model = feature_model(model, feature_layers) if feature_layers else model
        self.sizes = tuple(s for s in BATCH_SIZES if s < max_batch_size) + (max_batch_size,)

    def warm_up(self, image_size: int) -> None:
        """Compile every padded batch size now, so that no request pays for it. On
        TensorFlow, Keras traces the predict step with ``reduce_retracing``: after the
        warm-up it takes any batch size, so later batches run unpadded (JAX compiles each
        shape: there they stay padded)."""
        import keras

        for size in self.sizes:
            self._predict(np.zeros((size, image_size, image_size, 3), np.float32))
        if keras.backend.backend() == "tensorflow":
            self.sizes = tuple(range(1, self.sizes[-1] + 1))

    def _predict(self, padded: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.model.predict_on_batch(padded)
        if not self.with_features:
            return np.asarray(out, np.float32).reshape(-1), None
        probabilities, features = out
        return np.asarray(probabilities, np.float32).reshape(-1), np.asarray(features, np.float32)

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N,) and features (N, d) or None, of ``x`` (N, S, S, 3); any N, in
        chunks of the largest size, each padded with zeros to the next compiled size."""
        largest = self.sizes[-1]
        probabilities, features = [], []
        for start in range(0, len(x), largest):
            chunk = np.asarray(x[start : start + largest], np.float32)
            size = next(s for s in self.sizes if s >= len(chunk))
            padded = np.zeros((size, *chunk.shape[1:]), np.float32)
            padded[: len(chunk)] = chunk
            probability, feature = self._predict(padded)
            probabilities.append(probability[: len(chunk)])
            if feature is not None:
                features.append(feature[: len(chunk)])
        if not probabilities:
            return np.empty(0, np.float32), None
        return np.concatenate(probabilities), np.concatenate(features) if features else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """One probability per image of ``x``."""
        return self.outputs(x)[0]
