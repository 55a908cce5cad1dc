"""The paper's three models in pure Keras 3 (any backend: TensorFlow, JAX, PyTorch).

- ``resnet50_lstm``: ResNet50 feature map -> sequence -> LSTM 32/16/8 -> Dropout -> sigmoid.
  The paper says the 2048-channel map is "reshaped to 2x2". ``sequence_mode`` picks a
  reading: ``spatial`` (default) makes each spatial position of the final map one time
  step (7x7 -> 49 steps of 2048 features at 224 px); ``pooled2x2`` average-pools the map
  to 2x2 first (4 steps of 2048).
- ``resnet50``: ResNet50 -> global average pooling -> Dropout -> sigmoid.
- ``lstm``: an LSTM over image rows (each row of W pixels x 3 channels is one step).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from cxr.config import ModelConfig, ModelName, TrainConfig

MODEL_NAMES: tuple[ModelName, ...] = ("resnet50_lstm", "resnet50", "lstm")


def resolve_weights(weights: str) -> str | None:
    """Map the config value to what ``keras.applications.ResNet50`` accepts."""
    if weights.lower() in ("none", "random", ""):
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ResNet50 weights file not found: {path}")
    return str(path)


def _backbone(image_size: int, config: ModelConfig) -> keras.Model:
    backbone = keras.applications.ResNet50(
        include_top=False,
        weights=resolve_weights(config.backbone_weights),
        input_shape=(image_size, image_size, 3),
    )
    if config.bn_momentum is not None:
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = config.bn_momentum
    return backbone


def build_resnet50_lstm(image_size: int, config: ModelConfig) -> keras.Model:
    """The proposed hybrid."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    features = _backbone(image_size, config)(inputs)
    if config.sequence_mode == "pooled2x2":
        features = layers.AdaptiveAveragePooling2D((2, 2), name="pool_2x2")(features)
    steps = features.shape[1] * features.shape[2]
    x = layers.Reshape((steps, features.shape[3]), name="to_sequence")(features)
    for i, units in enumerate(config.lstm_units):
        last = i == len(config.lstm_units) - 1
        x = layers.LSTM(units, return_sequences=not last, name=f"lstm_{units}_{i}")(x)
    x = layers.Dropout(config.dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="covid_probability")(x)
    return keras.Model(inputs, outputs, name="resnet50_lstm")


def build_resnet50(image_size: int, config: ModelConfig) -> keras.Model:
    """The CNN baseline."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = _backbone(image_size, config)(inputs)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(config.dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="covid_probability")(x)
    return keras.Model(inputs, outputs, name="resnet50")


def build_lstm(image_size: int, config: ModelConfig) -> keras.Model:
    """The RNN baseline: rows as time steps."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Reshape((image_size, image_size * 3), name="rows")(inputs)
    x = layers.LSTM(config.baseline_lstm_units, name="lstm")(x)
    x = layers.Dropout(config.dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="covid_probability")(x)
    return keras.Model(inputs, outputs, name="lstm")


_BUILDERS = {
    "resnet50_lstm": build_resnet50_lstm,
    "resnet50": build_resnet50,
    "lstm": build_lstm,
}


def build_model(
    name: ModelName, image_size: int, model_config: ModelConfig, train_config: TrainConfig
) -> keras.Model:
    """Build and compile one of the three models (Adam, binary cross-entropy)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {list(_BUILDERS)}")
    model = _BUILDERS[name](image_size, model_config)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=train_config.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model
