"""Training of one model with the paper's settings, keeping the best-validation checkpoint."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from cxr.core.config import ModelName, ResNetStage, Settings, TrainConfig
from cxr.data.dataset import Arrays
from cxr.train.devices import (
    TrainingDevices,
    distribution_scope,
    even_length,
    plan_training_devices,
)
from cxr.train.models import build_model
from cxr.train.progress import EpochProgress, EpochReport


@dataclass
class TrainedModel:
    """A trained model restored to its best-validation epoch."""

    name: ModelName
    model: keras.Model
    checkpoint: Path
    history: dict[str, list[float]]
    best_epoch: int
    seconds: float
    images_per_second: float  # training images x epochs / fit time (validation included)
    backbone_init: str
    devices: dict[str, object] = field(default_factory=dict)  # TrainingDevices.as_dict()


def best_epoch_index(history: dict[str, list[float]], monitor: str) -> int:
    """Index of the epoch the checkpoint callback kept (first best value)."""
    values = history[monitor]
    best = max(values) if monitor.endswith("accuracy") else min(values)
    return values.index(best)


def training_order(config: TrainConfig) -> list[ModelName]:
    """The models in training order: the ResNet50 baseline first when the hybrid starts
    from its backbone."""
    order = list(config.models)
    if config.hybrid_backbone_from_baseline and {"resnet50", "resnet50_lstm"} <= set(order):
        order.remove("resnet50")
        order.insert(0, "resnet50")
    return order


def with_baseline_backbone(
    settings: Settings, baseline: TrainedModel, out_dir: Path
) -> tuple[Settings, ResNetStage]:
    """Settings whose ResNet50 starts from the trained baseline's backbone, saved as a
    weights file in the run (the same path a user-supplied weights file takes), at
    ``train.fine_tune_learning_rate`` for ``train.fine_tune_epochs`` when set; and the
    first stage that fine-tunes (``train.hybrid_trainable_from``)."""
    path = out_dir / "resnet50_backbone.weights.h5"
    baseline.model.get_layer("resnet50").save_weights(path)
    model = settings.model.model_copy(update={"backbone_weights": str(path)})
    rate = settings.train.fine_tune_learning_rate
    rate = settings.train.learning_rate if rate is None else rate
    epochs = settings.train.fine_tune_epochs or settings.train.epochs
    train = settings.train.model_copy(update={"learning_rate": rate, "epochs": epochs})
    handed_over = settings.model_copy(update={"model": model, "train": train})
    return handed_over, settings.train.hybrid_trainable_from


def train_model(
    name: ModelName,
    train: Arrays,
    val: Arrays,
    settings: Settings,
    out_dir: Path,
    baseline: TrainedModel | None = None,
    report: Callable[[EpochReport], None] | None = None,
) -> TrainedModel:
    """Fit one model, save the best-validation checkpoint and restore it. With
    ``train.hybrid_backbone_from_baseline``, the hybrid starts from ``baseline``'s ResNet50.
    Where several devices are visible it trains data-parallel on all of them
    (:mod:`cxr.train.devices`); the restored model is an ordinary one-device model.
    ``report``, when given, gets an :class:`EpochReport` as the fit starts and after each
    epoch (:mod:`cxr.train.progress`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trainable_from: ResNetStage = "conv1"
    if name == "resnet50_lstm" and settings.train.hybrid_backbone_from_baseline:
        if baseline is None:
            raise ValueError("the hybrid starts from the ResNet50 baseline: train it first")
        settings, trainable_from = with_baseline_backbone(settings, baseline, out_dir)
    cfg = settings.train
    keras.utils.set_random_seed(cfg.seed)
    plan = plan_training_devices(settings.preprocess.batch_size)
    train_x, train_y = _split_evenly(train, plan)
    val_x, val_y = _split_evenly(val, plan)
    steps_per_epoch = math.ceil(len(train_y) / settings.preprocess.batch_size)
    checkpoint = out_dir / f"{name}.keras"
    mode = "max" if cfg.checkpoint_monitor.endswith("accuracy") else "min"
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            checkpoint, monitor=cfg.checkpoint_monitor, mode=mode, save_best_only=True
        ),
        keras.callbacks.CSVLogger(str(out_dir / f"{name}_history.csv")),
    ]
    if report is not None:
        callbacks.append(EpochProgress(name, len(train_y), report))
    with distribution_scope(plan):
        model = build_model(
            name,
            settings.preprocess.image_size,
            settings.model,
            cfg,
            steps_per_epoch,
            trainable_from,
        )
        started = time.perf_counter()
        fit = model.fit(
            train_x,
            train_y,
            validation_data=(val_x, val_y),
            epochs=cfg.epochs,
            batch_size=settings.preprocess.batch_size,
            shuffle=True,
            callbacks=callbacks,
            verbose=cfg.verbose,
        )
        seconds = time.perf_counter() - started
    history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    best = keras.saving.load_model(checkpoint)  # outside the scope: an ordinary model
    return TrainedModel(
        name=name,
        model=best,
        checkpoint=checkpoint,
        history=history,
        best_epoch=best_epoch_index(history, cfg.checkpoint_monitor),
        seconds=seconds,
        images_per_second=len(train_y) * len(history["loss"]) / seconds,
        backbone_init="-" if name == "lstm" else settings.model.backbone_weights,
        devices={
            **plan.as_dict(),
            "images_left_out": {
                "train": len(train.y) - len(train_y),
                "val": len(val.y) - len(val_y),
            },
        },
    )


def _split_evenly(arrays: Arrays, plan: TrainingDevices) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels cut to a length that splits evenly across the devices (the
    whole arrays on one device)."""
    n = even_length(len(arrays.y), plan)
    return arrays.x[:n], arrays.y[:n]
