"""Progress of a training as it happens: a Keras callback that hands one report per
epoch (metrics, images/s, how far the fit is) to a reporting function. It knows nothing
of Prefect; ``tasks/train.py`` passes a function that logs to the run and moves its
progress artifact."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras

logger = logging.getLogger("cxr.train")


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch of one model's fit."""

    model: str
    epoch: int  # 1-based
    epochs: int  # of this fit
    metrics: dict[str, float] = field(default_factory=dict)  # Keras logs: loss, val_loss, ...
    seconds: float = 0.0  # the epoch's wall time (validation included)
    images_per_second: float = 0.0  # training images / seconds

    @property
    def percent(self) -> float:
        """Share of the fit's epochs done, 0-100."""
        return 100.0 * self.epoch / self.epochs if self.epochs else 100.0

    def line(self) -> str:
        """The epoch as one log line, e.g. ``lstm epoch 2/15: loss 0.6012 accuracy
        0.6875 val_loss 0.5934 val_accuracy 0.7000 | 41.2 s, 23.3 images/s``."""
        if self.epoch == 0:
            return f"{self.model}: fit starts, {self.epochs} epochs"
        shown = " ".join(
            f"{key} {self.metrics[key]:.4f}" for key in sorted(self.metrics, key=_order)
        )
        return (
            f"{self.model} epoch {self.epoch}/{self.epochs}: {shown} | "
            f"{self.seconds:.1f} s, {self.images_per_second:.1f} images/s"
        )


def _order(key: str) -> tuple[bool, bool, str]:
    """Training metrics before validation ones, loss first in each."""
    base = key.removeprefix("val_")
    return key.startswith("val_"), base != "loss", base


def log_report(report: EpochReport) -> None:
    """The default reporting function: the epoch line on the ``cxr.train`` logger."""
    logger.info(report.line())


class EpochProgress(keras.callbacks.Callback):
    """Calls ``report`` once when the fit starts (epoch 0) and once after each epoch,
    with the metrics Keras logged for it and the training images per second."""

    def __init__(
        self, model_name: str, train_images: int, report: Callable[[EpochReport], None]
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.train_images = train_images
        self.report = report
        self._epochs = 0
        self._started = 0.0

    def _epochs_planned(self) -> int:
        return int((self.params or {}).get("epochs") or 0)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._epochs = self._epochs_planned()
        self.report(EpochReport(self.model_name, 0, self._epochs))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._started
        metrics = {k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"}
        rate = self.train_images / seconds if seconds > 0 else 0.0
        self.report(EpochReport(self.model_name, epoch + 1, self._epochs, metrics, seconds, rate))
