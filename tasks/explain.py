"""Explanation task: occlusion heat maps of the gated model on test images, the grid
published as an artifact and the border share of the heat reported in ``metrics.json``."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cxr.core.config import Settings
from cxr.core.runs import Run
from cxr.data.dataset import Arrays
from cxr.train.explanations import explain_test_images
from cxr.train.paper import DISPLAY_NAMES
from cxr.train.training import TrainedModel
from tasks.artifacts import publish_image


@task(name="explain", task_run_name="explain-{trained.name}", cache_policy=NO_CACHE)
def explain(
    trained: TrainedModel, test: Arrays, results: dict[str, dict], settings: Settings, run: Run
) -> dict:
    """Explain up to 8 test images (right and wrong, both classes) at the model's cut-off,
    with the calibrated test probabilities the evaluation task saved and its temperature."""
    name = trained.name
    cutoff = float(results[name]["cutoff"]["value"])
    temperature = float(results[name]["calibration"]["temperature"])
    probabilities = pd.read_csv(run.path("predictions", f"{name}_test.csv"))["covid_probability"]
    png = run.path("plots", f"{name}_explanations.png")
    summary = explain_test_images(
        trained.model, test.x, test.y, probabilities.to_numpy(), cutoff,
        settings.data.classes, f"{DISPLAY_NAMES.get(name, name)}: occlusion heat maps", png,
        temperature,
    )  # fmt: skip
    run.update_json("metrics.json", explanations={"model": name, **summary})
    publish_image(f"{name}-explanations", png, f"run {run.run_id}: {name} test heat maps")
    get_run_logger().info(
        "%s: %d test images explained; mean border share of the heat %s (even spread %.2f)",
        name, summary["images"], summary["border_heat_share_mean"],
        summary["uniform_border_share"],
    )  # fmt: skip
    return summary
