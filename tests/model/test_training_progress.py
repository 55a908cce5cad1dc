"""Epoch progress during a fit: one report per epoch with Keras's metrics, and the
Prefect reporter doing nothing Prefect-related outside a run."""

from __future__ import annotations

import logging
import warnings

import keras
import numpy as np
import pytest

from cxr.train.progress import EpochProgress, EpochReport
from tasks.train import RunProgress


def _fit(epochs: int, report) -> None:
    """A one-layer classifier fitted on 40 random vectors, with validation."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)).astype("float32"), rng.integers(0, 2, 40)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("sgd", "binary_crossentropy", metrics=["accuracy"])
    model.fit(
        x[:32], y[:32], validation_data=(x[32:], y[32:]), epochs=epochs, batch_size=8,
        callbacks=[EpochProgress("lstm", 32, report)], verbose=0,
    )  # fmt: skip


def test_one_report_as_the_fit_starts_and_one_per_epoch() -> None:
    reports: list[EpochReport] = []
    _fit(3, reports.append)
    assert [(r.epoch, r.epochs) for r in reports] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [r.percent for r in reports] == pytest.approx([0, 100 / 3, 200 / 3, 100])
    assert reports[0].line() == "lstm: fit starts, 3 epochs"
    for report in reports[1:]:
        assert set(report.metrics) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert report.seconds > 0 and report.images_per_second == pytest.approx(32 / report.seconds)
    line = reports[-1].line()
    assert line.startswith("lstm epoch 3/3: loss ") and " val_accuracy " in line
    assert line.endswith(" images/s")


def test_the_run_reporter_outside_a_run_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    reporter = RunProgress("lstm", "run-1")
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="cxr.train"):
        warnings.simplefilter("error")  # an artifact outside a run would warn (FutureWarning)
        _fit(2, reporter)
    assert reporter.artifact_id is None
    lines = [r.getMessage() for r in caplog.records if r.name == "cxr.train"]
    assert lines[0] == "lstm: fit starts, 2 epochs" and len(lines) == 3
    assert lines[2].startswith("lstm epoch 2/2: loss ")
