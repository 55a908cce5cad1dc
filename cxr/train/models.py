"""The paper's three models in pure Keras 3 (checked on the TensorFlow and JAX backends).

- ``resnet50_lstm``: ResNet50 feature map -> sequence -> LSTM 32/16/8 -> Dropout -> sigmoid.
  The paper says the 2048-channel map is "reshaped to 2x2". ``sequence_mode`` picks a
  reading: ``spatial`` (default) makes each spatial position of the final map one time
  step (7x7 -> 49 steps of 2048 features at 224 px); ``pooled2x2`` average-pools the map
  to 2x2 first (4 steps of 2048).
- ``resnet50``: ResNet50 -> global average pooling -> Dropout -> sigmoid.
- ``lstm``: an LSTM over image rows (each row of W pixels x 3 channels is one step).

Recipe options (off in the paper profile): an ``augmentation`` block right after the
input, active only while training; a warm-up + cosine learning-rate schedule; bfloat16
compute with float32 weights and a float32 output (``train.mixed_precision``); a ResNet50
that starts from given weights and trains only from a given stage on (the hybrid's
hand-over from the trained baseline).

ImageNet input normalization (``model.input_normalization: imagenet``, the ``pretrained``
profile): a backbone that starts from ImageNet weights learned them on caffe-style input
(``keras.applications.resnet50.preprocess_input``: 0-255 pixels, RGB->BGR, minus the
channel means). Our images are [0, 1] gray copied to three equal channels, so the
ResNet50 models start with an ``imagenet_preprocess`` block (x 255, minus the BGR means;
the channel swap is the identity on equal channels). It is built-in Keras layers, so the
saved ``.keras`` file carries it: training, ``cxr evaluate`` and the service all feed the
same [0, 1] images from the one preprocessing function. It follows the setting, not the
weights: a backbone handed over from a baseline trained without it keeps working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
from keras import layers

from cxr.core.config import (
    RANDOM_INIT,
    AugmentationConfig,
    ModelConfig,
    ModelName,
    ResNetStage,
    TrainConfig,
)
from cxr.core.errors import DataInputError
from cxr.train.devices import use_bfloat16


def resolve_weights(weights: str) -> str | None:
    """Map the config value to what ``keras.applications.ResNet50`` accepts."""
    if weights.lower() in RANDOM_INIT:
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise DataInputError(f"ResNet50 weights file not found: {path}")
    return str(path)


def _backbone(image_size: int, config: ModelConfig, trainable_from: ResNetStage) -> keras.Model:
    backbone = keras.applications.ResNet50(
        include_top=False,
        weights=resolve_weights(config.backbone_weights),
        input_shape=(image_size, image_size, 3),
    )
    if config.bn_momentum is not None:
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = config.bn_momentum
    first = int(trainable_from[-1])
    for layer in backbone.layers:  # names: conv1_*, pool1_*, conv2_block1_*, ..., conv5_*
        if layer.name[:4] in ("conv", "pool"):
            layer.trainable = int(layer.name[4]) >= first
    return backbone


def _inputs(image_size: int, augmentation: AugmentationConfig | None) -> tuple[Any, Any]:
    """The image input, and what the network reads: augmented while training if enabled."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    if augmentation is None or not augmentation.enabled:
        return inputs, inputs
    return inputs, augmentation_block(augmentation)(inputs)


IMAGENET_BGR_MEANS = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, caffe mode


def imagenet_preprocess_block() -> keras.Sequential:
    """[0, 1] images of three equal channels -> ResNet50's ImageNet (caffe-style) input:
    x 255 minus the BGR channel means, computed in float32 under mixed precision."""
    return keras.Sequential(
        [
            layers.Rescaling(255.0, dtype="float32", name="to_0_255"),
            layers.Normalization(
                mean=list(IMAGENET_BGR_MEANS), variance=[1.0, 1.0, 1.0], dtype="float32",
                name="minus_imagenet_means",
            ),
        ],
        name="imagenet_preprocess",
    )  # fmt: skip


def _hybrid(x: Any, image_size: int, config: ModelConfig, trainable_from: ResNetStage) -> Any:
    """The proposed hybrid's body: ResNet50 map -> sequence -> LSTM 32/16/8."""
    features = _backbone(image_size, config, trainable_from)(x)
    if config.sequence_mode == "pooled2x2":
        features = layers.AdaptiveAveragePooling2D((2, 2), name="pool_2x2")(features)
    steps = features.shape[1] * features.shape[2]
    x = layers.Reshape((steps, features.shape[3]), name="to_sequence")(features)
    for i, units in enumerate(config.lstm_units):
        last = i == len(config.lstm_units) - 1
        x = layers.LSTM(units, return_sequences=not last, name=f"lstm_{units}_{i}")(x)
    return x


def _resnet50(x: Any, image_size: int, config: ModelConfig, trainable_from: ResNetStage) -> Any:
    """The CNN baseline's body: ResNet50 -> global average pooling."""
    x = _backbone(image_size, config, trainable_from)(x)
    return layers.GlobalAveragePooling2D(name="gap")(x)


def _lstm(x: Any, image_size: int, config: ModelConfig, trainable_from: ResNetStage) -> Any:
    """The RNN baseline's body: rows as time steps (no ResNet50: ``trainable_from`` unused)."""
    x = layers.Reshape((image_size, image_size * 3), name="rows")(x)
    return layers.LSTM(config.baseline_lstm_units, name="lstm")(x)


_BODIES = {"resnet50_lstm": _hybrid, "resnet50": _resnet50, "lstm": _lstm}
_RESNET_BODIES = ("resnet50_lstm", "resnet50")  # the ``lstm`` baseline reads the rows as they are


def build_network(
    name: ModelName,
    image_size: int,
    config: ModelConfig,
    augmentation: AugmentationConfig | None = None,
    trainable_from: ResNetStage = "conv1",
) -> keras.Model:
    """One of the three networks (uncompiled): [augmentation] -> [ImageNet input
    normalization, ResNet50 models] -> body -> Dropout -> sigmoid."""
    inputs, x = _inputs(image_size, augmentation)
    if config.input_normalization == "imagenet" and name in _RESNET_BODIES:
        x = imagenet_preprocess_block()(x)  # after augmentation, which works on [0, 1]
    x = _BODIES[name](x, image_size, config, trainable_from)
    x = layers.Dropout(config.dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="covid_probability")(x)
    return keras.Model(inputs, outputs, name=name)


def augmentation_block(config: AugmentationConfig) -> keras.Sequential:
    """Random shift, zoom, rotation and contrast of [0, 1] images; identity at inference.
    No left-right flip: it moves the heart to the other side."""
    return keras.Sequential(
        [
            layers.RandomTranslation(config.translation, config.translation, fill_mode="constant"),
            layers.RandomZoom(config.zoom, fill_mode="constant"),
            layers.RandomRotation(config.rotation, fill_mode="constant"),
            layers.RandomContrast(config.contrast, value_range=(0.0, 1.0)),
        ],
        name="augmentation",
    )


def learning_rate(config: TrainConfig, steps_per_epoch: int | None) -> float | object:
    """The optimiser's learning rate: a constant, or a (warm-up +) cosine schedule, which
    needs the number of steps per epoch."""
    if config.lr_schedule == "constant" and config.warmup_epochs == 0:
        return config.learning_rate
    if not steps_per_epoch:
        raise ValueError("a learning-rate schedule needs steps_per_epoch")
    warmup = config.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.learning_rate,
        decay_steps=max(1, (config.epochs * steps_per_epoch) - warmup),
        alpha=1.0 if config.lr_schedule == "constant" else 0.0,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def build_model(
    name: ModelName,
    image_size: int,
    model_config: ModelConfig,
    train_config: TrainConfig,
    steps_per_epoch: int | None = None,
    trainable_from: ResNetStage = "conv1",
) -> keras.Model:
    """Build and compile one of the three models (Adam, binary cross-entropy), with the
    augmentation block in front when the training config enables it. ResNet50 stages
    before ``trainable_from`` keep their loaded weights and batch-norm statistics."""
    if name not in _BODIES:
        raise ValueError(f"unknown model {name!r}; choose from {list(_BODIES)}")
    if trainable_from != "conv1" and model_config.backbone_weights.lower() in RANDOM_INIT:
        raise ValueError("freezing ResNet50 stages needs pretrained backbone weights")
    previous = keras.config.dtype_policy()
    mixed = use_bfloat16(train_config.mixed_precision)
    keras.config.set_dtype_policy("mixed_bfloat16" if mixed else "float32")
    try:
        model = build_network(
            name, image_size, model_config, train_config.augmentation, trainable_from
        )
    finally:
        keras.config.set_dtype_policy(previous)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(train_config, steps_per_epoch)),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=["accuracy"],
    )
    return model
