"""Out-of-distribution tasks: fit each model's detector (training features, validation
threshold) and report the share of the test split it would refuse."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cxr.core.config import Settings
from cxr.core.ood import DETECTOR_FILE
from cxr.core.runs import Run
from cxr.data.dataset import Arrays
from cxr.train.ood import fit_detector, ood_markdown, ood_scores, refusal_summary
from cxr.train.training import TrainedModel
from tasks.artifacts import publish_markdown


@task(name="ood", task_run_name="ood-{trained.name}", cache_policy=NO_CACHE)
def fit_ood(
    trained: TrainedModel, arrays: dict[str, Arrays], result: dict, settings: Settings, run: Run
) -> dict:
    """Fit the detector, save it as ``ood/<model>/ood.npz`` and the validation and test
    splits' scores as ``predictions/<model>_{val,test}_ood.csv``; return ``result`` with
    its ``ood`` summary."""
    model, keep = trained.model, settings.ood.keep_share
    detector = fit_detector(model, arrays["train"].x, arrays["val"].x, keep)
    detector.save(run.path("ood", trained.name, DETECTOR_FILE))
    scores = {split: ood_scores(model, detector, arrays[split].x) for split in ("val", "test")}
    for split, split_scores in scores.items():  # beside <model>_<split>.csv: the reference's
        pd.DataFrame(
            {
                "path": arrays[split].paths,
                "ood_score": split_scores,
                "in_distribution": detector.in_distribution(split_scores),
            }
        ).to_csv(run.path("predictions", f"{trained.name}_{split}_ood.csv"), index=False)
    val_kept = float(detector.in_distribution(scores["val"]).mean())
    test_scores = scores["test"]
    summary = {**detector.summary(), "val_kept_share": val_kept}
    summary["test"] = refusal_summary(detector, test_scores)
    get_run_logger().info(
        "%s OOD check: threshold %.2f keeps %.3f of validation, would refuse %d/%d test images",
        trained.name, detector.threshold, val_kept,
        summary["test"]["refused"], summary["test"]["n"],
    )  # fmt: skip
    return {**result, "ood": summary}


@task(name="ood-report", cache_policy=NO_CACHE)
def report_ood(results: dict[str, dict], run: Run) -> str:
    """Add the OOD section to ``comparison.md`` and publish it."""
    markdown = ood_markdown(results)
    comparison = run.path("comparison.md")
    previous = comparison.read_text() if comparison.exists() else ""
    run.write_text("comparison.md", previous + markdown)
    publish_markdown("ood-check", markdown, f"run {run.run_id}: out-of-distribution check")
    return markdown
