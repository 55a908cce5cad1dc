"""Evaluation task: temperature scaling fitted on the validation split, the P(COVID)
cut-off on the calibrated probabilities (configured, or chosen on the validation split),
then test-set metrics, confusion matrix, ROC curve and reliability diagram of one trained
model."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cxr.core.calibration import calibrate
from cxr.core.config import Settings
from cxr.core.runs import Run
from cxr.data.dataset import Arrays
from cxr.train.evaluation import evaluate_model, summarize_model
from cxr.train.reporting import plot_confusion, plot_reliability, plot_roc, roc_points
from cxr.train.training import TrainedModel
from tasks.artifacts import publish_image, publish_table


@task(name="evaluate", task_run_name="evaluate-{trained.name}", cache_policy=NO_CACHE)
def evaluate(
    trained: TrainedModel, val: Arrays, test: Arrays, settings: Settings, run: Run
) -> dict:
    """Metrics on the held-out test split (COVID positive) of the calibrated P(COVID),
    saved and published with the reliability diagram (before and after scaling)."""
    name, logger = trained.name, get_run_logger()
    result = evaluate_model(trained.model, val, test, settings.decision)
    calibration = result.calibration
    logger.info(
        "%s: temperature %.3f (%s), test ECE %.4f -> %.4f; cut-off %.3f (%s)",
        name, calibration["temperature"], calibration["fitted_on"],
        calibration["test_ece_before"], calibration["test_ece_after"],
        result.cutoff["value"], result.cutoff["chosen_on"],
    )  # fmt: skip
    metrics = result.metrics
    raw = {"test": result.raw_probabilities, "val": result.val_raw_probabilities}
    for split, arrays in (("test", test), ("val", val)):  # val: for the monitoring reference
        pd.DataFrame(
            {
                "path": arrays.paths,
                "label_index": arrays.y.astype(int),
                # calibrated, as the service answers
                "covid_probability": calibrate(raw[split], calibration["temperature"]),
                "raw_covid_probability": raw[split],
            }
        ).to_csv(run.path("predictions", f"{name}_{split}.csv"), index=False)
    png = plot_confusion(name, metrics["confusion"], run.path("plots", f"{name}_confusion.png"))
    publish_image(f"{name}-confusion-matrix", png, f"run {run.run_id}: {name} test confusion")
    cutoff, roc = float(result.cutoff["value"]), roc_points(test.y, result.probabilities)
    png = plot_roc(name, test.y, result.probabilities, cutoff, run.path("plots", f"{name}_roc.png"))
    publish_image(f"{name}-roc-curve", png, f"run {run.run_id}: {name} test ROC, AUC in legend")
    pd.DataFrame(roc, columns=["threshold", "fpr", "tpr"]).to_csv(
        run.path("plots", f"{name}_roc.csv"), index=False
    )
    if roc:  # one class in the test split: no curve, no table
        publish_table(f"{name}-roc-points", roc, f"run {run.run_id}: {name} test ROC points")
    png = plot_reliability(
        name, test.y, result.raw_probabilities, result.probabilities, calibration,
        run.path("plots", f"{name}_reliability.png"),
    )  # fmt: skip
    publish_image(
        f"{name}-reliability", png, f"run {run.run_id}: {name} test reliability, before/after T"
    )
    logger.info(
        "%s test: accuracy %.4f (95%% CI %.3f-%.3f), F1 %.4f",
        name, metrics["accuracy"], *metrics["accuracy_ci95"], metrics["f1"],
    )  # fmt: skip
    summary = summarize_model(
        trained.history, trained.best_epoch, trained.seconds, trained.images_per_second, metrics
    )
    return {
        **summary,
        "backbone_init": trained.backbone_init,
        "cutoff": result.cutoff,
        "calibration": calibration,
    }
