"""Packaging task: runs only after the gate passed."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cxr.core.config import Settings
from cxr.core.ood import DETECTOR_FILE
from cxr.core.runs import Run
from cxr.monitor.reference import REFERENCE_FILE, build_reference, split_predictions
from cxr.train.packaging import package
from cxr.train.training import TrainedModel
from tasks.artifacts import publish_markdown


@task(name="package", cache_policy=NO_CACHE)
def package_model(
    trained: TrainedModel,
    images: pd.DataFrame,
    results: dict[str, dict],
    run_info: dict,
    settings: Settings,
    run: Run,
) -> dict[str, str | None]:
    """Save the gated model with its monitoring reference (test split statistics and
    predictions) and its out-of-distribution detector to the BentoML store and build the
    bento; print the tags. The model ships with the cut-off its test metrics were
    computed at."""
    cutoff = results[trained.name]["cutoff"]["value"]  # configured or chosen on validation
    settings = settings.model_copy(
        update={"decision": settings.decision.model_copy(update={"cutoff": cutoff})}
    )
    predictions = split_predictions(run.path("predictions"), trained.name)  # test (+ val)
    reference = build_reference(
        images, predictions, settings.data.classes, settings.decision.cutoff
    )
    reference_file = run.path(REFERENCE_FILE)
    reference.to_csv(reference_file, index=False)
    detector = run.path("ood", trained.name, DETECTOR_FILE)
    extra = [reference_file, *([detector] if detector.exists() else [])]
    tags = package(trained.checkpoint, extra, results, run_info, settings)
    run.update_json("metrics.json", package=tags)
    publish_markdown(
        "package",
        f"- model: `{tags['model_tag']}`\n- bento: `{tags['bento_tag']}`\n",
        f"run {run.run_id}: packaged model",
    )
    get_run_logger().info("packaged model %s, bento %s", tags["model_tag"], tags["bento_tag"])
    return tags
