"""The training flow: ingestion -> validation -> preprocessing -> training ->
evaluation (and the out-of-distribution check) -> gate -> packaging -> promotion. This
file only wires the stages together."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from cxr.core.config import REPO_ROOT, Settings, load_settings
from cxr.core.runs import Run, git_commit
from cxr.data.demo_data import is_synthetic
from cxr.data.ingestion import fingerprint, resolve_dataset_root
from cxr.train.devices import compute_devices, use_bfloat16
from cxr.train.training import TrainedModel, training_order
from tasks.evaluate import evaluate
from tasks.explain import explain
from tasks.gate import gate
from tasks.ingest import ingest_images
from tasks.ood import fit_ood, report_ood
from tasks.package import package_model
from tasks.preprocess import preprocess_images
from tasks.promote import promote_model
from tasks.report import report
from tasks.train import train
from tasks.validate import validate


@flow(name="cxr-training", log_prints=True)
def training_flow(
    data_dir: str,
    profile: str | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate, gate and package the chest X-ray classifiers on ``data_dir``."""
    settings: Settings = load_settings(
        profile, Path(config_file) if config_file else None, overrides
    )
    run = Run.create(settings.runs_dir, run_id)
    commit = git_commit(REPO_ROOT)  # the code this run starts with
    run.write_json("config.json", settings.model_dump(mode="json"))
    print(f"run {run.run_id}: artifacts in {run.dir}")
    started = time.perf_counter()
    try:
        return _stages(Path(data_dir), settings, run, commit)
    finally:  # the wall time is kept whether the gate passes or not
        run.update_json("metrics.json", wall_seconds=round(time.perf_counter() - started, 1))


def _stages(data_dir: Path, settings: Settings, run: Run, commit: str) -> dict[str, Any]:
    """ingestion -> validation -> preprocessing -> training -> evaluation -> gate -> packaging."""
    images = ingest_images(data_dir, settings, run)
    validate(images, settings, run)
    arrays = preprocess_images(images, settings, run)
    trained: dict[str, TrainedModel] = {}
    for name in training_order(settings.train):
        trained[name] = train(name, arrays, settings, run, baseline=trained.get("resnet50"))
    results = {
        name: evaluate(model, arrays["val"], arrays["test"], settings, run)
        for name, model in trained.items()
    }
    results = {  # each model's out-of-distribution detector, beside its raw test metrics
        name: fit_ood(model, arrays, results[name], settings, run)
        for name, model in trained.items()
    }
    run_info = {
        "run_id": run.run_id,
        "prefect_flow_run_id": str(flow_run.id),
        "profile": settings.profile,
        "data_dir": str(data_dir.resolve()),
        "synthetic": is_synthetic(resolve_dataset_root(data_dir)),
        "dataset_fingerprint": fingerprint(images),
        "git_commit": commit,
        "devices": compute_devices(),
        "mixed_bfloat16": use_bfloat16(settings.train.mixed_precision),
    }
    report(results, run_info, run)
    report_ood(results, run)
    explain(trained[settings.gate.model], arrays["test"], results, settings, run)
    gate(results, settings, run)
    tags = package_model(trained[settings.gate.model], images, results, run_info, settings, run)
    promotion = promote_model(tags, images, settings, run)  # champion / challenger
    promoted = promotion["promoted"]
    return {"run_id": run.run_id, "run_dir": str(run.dir), **tags, "promoted": promoted}
