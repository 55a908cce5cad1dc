"""Test-set metrics with COVID as the positive class, as in the paper."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from cxr.core.calibration import NO_TEMPERATURE, calibrate
from cxr.core.config import DecisionConfig
from cxr.core.errors import DataInputError
from cxr.core.inference import Predictor
from cxr.data.dataset import Arrays, load_arrays
from cxr.train.calibration import (
    ECE_BINS,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
)

PREDICT_BATCH = 32
CHUNK = 256  # images decoded at a time by ``cxr evaluate`` (memory stays flat)


def wilson_interval(successes: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    denom = 1 + z**2 / total
    centre = (p + z**2 / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / denom
    # rounding can put a bound a hair past the estimate at p = 0 or 1: keep p inside
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def predict_probabilities(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """P(COVID) for each image of a preprocessed batch, through the same compiled path
    as the service."""
    return Predictor(model, PREDICT_BATCH)(x)


def compute_metrics(y_true: np.ndarray, prob: np.ndarray, cutoff: float) -> dict[str, object]:
    """Accuracy (with Wilson CI), precision, recall, F1, ROC AUC and the confusion matrix
    at the P(COVID) ``cutoff`` (reported as ``threshold``, the name the service answers)."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = (np.asarray(prob) >= cutoff).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    correct = int(tp + tn)
    low, high = wilson_interval(correct, len(y_true))
    both_classes = len(np.unique(y_true)) == 2
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "accuracy_ci95": [low, high],
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, prob)) if both_classes else None,
        "threshold": cutoff,
        "confusion": {"tp": int(tp), "fn": int(fn), "fp": int(fp), "tn": int(tn)},
    }


def choose_cutoff(y_true: np.ndarray, prob: np.ndarray) -> tuple[float, float]:
    """The P(COVID) cut-off with the best accuracy on (validation) labels, and that
    accuracy. Candidates are 0.5 and the midpoints between neighbouring probabilities;
    of the best ones the median is taken, away from the examples on either side."""
    y_true, prob = np.asarray(y_true).astype(int), np.asarray(prob, dtype=np.float64)
    values = np.unique(prob)
    candidates = np.unique(np.concatenate([[0.5], (values[:-1] + values[1:]) / 2]))
    accuracy = np.array([np.mean((prob >= c) == y_true) for c in candidates])
    best = candidates[accuracy == accuracy.max()]
    return float(best[(len(best) - 1) // 2]), float(accuracy.max())


@dataclass
class ModelEvaluation:
    """One model's test metrics, the cut-off they were computed at, the calibration and
    the test probabilities (calibrated, and as the model gave them)."""

    metrics: dict[str, object]
    cutoff: dict[str, object]  # value, chosen_on ("config" | "validation"), [val_accuracy]
    probabilities: np.ndarray  # calibrated P(COVID): the metrics' and the service's
    calibration: dict[str, object]  # temperature, fitted_on, NLL and ECE before/after
    raw_probabilities: np.ndarray  # the model's sigmoid output
    val_raw_probabilities: np.ndarray  # the validation split's, for the monitoring reference


def evaluate_model(
    model: keras.Model, val: Arrays, test: Arrays, decision: DecisionConfig
) -> ModelEvaluation:
    """The temperature (fitted on the validation split, or 1), then the cut-off on the
    calibrated probabilities (configured, or chosen on the validation split; never on the
    test split), then the test-split metrics of the calibrated probabilities at it."""
    val_raw = predict_probabilities(model, val.x)
    test_raw = predict_probabilities(model, test.x)
    temperature = fit_temperature(val.y, val_raw) if decision.calibrate else NO_TEMPERATURE
    fitted_on = "validation" if decision.calibrate else "off"
    calibration = calibration_summary(temperature, fitted_on, val.y, val_raw, test.y, test_raw)
    cutoff: dict[str, object] = {"value": decision.cutoff, "chosen_on": "config"}
    if decision.cutoff_from_validation:
        value, val_accuracy = choose_cutoff(val.y, calibrate(val_raw, temperature))
        cutoff = {"value": value, "chosen_on": "validation", "val_accuracy": val_accuracy}
    probabilities = calibrate(test_raw, temperature)
    metrics = compute_metrics(test.y, probabilities, float(cutoff["value"]))
    return ModelEvaluation(metrics, cutoff, probabilities, calibration, test_raw, val_raw)


def summarize_model(
    history: dict[str, list[float]],
    best_epoch: int,
    seconds: float,
    images_per_second: float,
    test: dict[str, object],
) -> dict[str, object]:
    """One model's entry in ``metrics.json``: best epoch, its numbers, training time and
    throughput (what a retraining costs on this hardware), test metrics."""
    return {
        "best_epoch": best_epoch + 1,
        "best_epoch_metrics": {key: values[best_epoch] for key, values in history.items()},
        "train_seconds": round(seconds, 1),
        "train_images_per_second": round(images_per_second, 1),
        "test": test,
        "history": history,
    }


def evaluate_packaged(
    tag: str,
    data_dir: Path,
    samples_per_class: int | None,
    seed: int,
    predictions_csv: Path | None = None,
) -> dict[str, object]:
    """Metrics of a packaged model on any dataset folder, on P(COVID) calibrated with the
    model's temperature (as the service answers); unreadable files are listed.
    With ``predictions_csv``, each image's calibrated probability, OOD score and
    in-distribution flag (empty for a model without a detector) are written there too; the
    metrics score every image by its verdict, whatever the detector says, and ``ood`` says
    how many the detector would refuse."""
    from cxr.core.config import DataConfig
    from cxr.core.model_store import load_any
    from cxr.core.ood import verdicts
    from cxr.data.ingestion import ingest, unreadable
    from cxr.train.ood import refusal_summary

    packaged = load_any(tag)
    config = DataConfig(classes=packaged.classes, samples_per_class=samples_per_class)
    images = ingest(data_dir, config, seed)
    usable = images.loc[images["readable"]]
    if usable.empty:
        raise DataInputError(f"no readable images under {data_dir}")
    paths, labels = usable["path"].tolist(), usable["label_index"].astype(int).tolist()
    detector = packaged.detector
    predictor = Predictor(packaged.model, PREDICT_BATCH, detector.layers if detector else ())
    found = []  # (probabilities, scores, flags) of each chunk, as the service computes them
    for i in range(0, len(paths), CHUNK):
        chunk = load_arrays(paths[i : i + CHUNK], labels[i : i + CHUNK], packaged.image_size)
        chunk_probabilities, features = predictor.outputs(chunk.x)
        found.append(
            (chunk_probabilities, *verdicts(detector, features, len(chunk.x), chunk.colour))
        )
    raw, scores, flags = (np.concatenate(column) for column in zip(*found, strict=True))
    probabilities = calibrate(raw, packaged.temperature)  # as the service answers
    if predictions_csv is not None:
        usable[["path", "label"]].assign(
            covid_probability=probabilities,
            in_distribution=pd.array(
                [None if np.isnan(f) else bool(f) for f in flags], dtype="boolean"
            ),
            ood_score=scores,
        ).to_csv(predictions_csv, index=False)
    return {
        "model": packaged.tag,
        "data_dir": str(Path(data_dir).resolve()),
        **compute_metrics(labels, probabilities, packaged.cutoff),
        "calibration": {
            "temperature": packaged.temperature,
            "ece_bins": ECE_BINS,
            "ece_before": expected_calibration_error(labels, raw),
            "ece_after": expected_calibration_error(labels, probabilities),
        },
        "ood": {**detector.summary(), **refusal_summary(detector, scores)} if detector else None,
        "unreadable": unreadable(images).to_dict("records"),
    }
