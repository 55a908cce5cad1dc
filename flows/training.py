"""The training flow: ingestion -> validation -> preprocessing -> training ->
evaluation (and the out-of-distribution check) -> gate -> packaging -> promotion. This
file only wires the stages together."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from cxr.core.config import REPO_ROOT, Settings, load_settings
from cxr.core.runs import Run, git_commit
from cxr.data.dataset import Arrays
from cxr.data.demo_data import is_synthetic
from cxr.data.ingestion import fingerprint, resolve_dataset_root
from cxr.train.dask_runner import (
    limit_worker_threads,
    prefect_api_url,
    task_runner,
    waits_for,
)
from cxr.train.devices import compute_devices, use_bfloat16
from cxr.train.training import TrainedModel, training_order
from tasks.evaluate import evaluate
from tasks.explain import explain
from tasks.gate import gate
from tasks.ingest import describe_shard, ingest_images, plan_shards
from tasks.ood import fit_ood, report_ood
from tasks.package import package_model
from tasks.preprocess import preprocess_images
from tasks.promote import promote_model
from tasks.report import report
from tasks.timeouts import timed
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
    dask = _dask_runner()
    if dask is None:  # the local runner: each stage in turn, in this process
        images = timed(ingest_images, settings)(data_dir, settings, run)
        validate(images, settings, run)
        arrays = preprocess_images(images, settings, run)
        trained: dict[str, TrainedModel] = {}
        fit = timed(train, settings)
        for name in training_order(settings.train):
            trained[name] = fit(name, arrays, settings, run, baseline=trained.get("resnet50"))
    else:
        images, arrays, trained = _stages_on_dask(dask, data_dir, settings, run)
    results = {
        name: timed(evaluate, settings)(model, arrays["val"], arrays["test"], settings, run)
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
    package = timed(package_model, settings)
    tags = package(trained[settings.gate.model], images, results, run_info, settings, run)
    promotion = timed(promote_model, settings)(tags, images, settings, run)  # champion / challenger
    promoted = promotion["promoted"]
    return {"run_id": run.run_id, "run_dir": str(run.dir), **tags, "promoted": promoted}


def _dask_runner() -> DaskTaskRunner | None:
    """The flow run's Dask task runner, when it has one (``runner.task_runner: dask``)."""
    runner = FlowRunContext.get().task_runner
    return runner if isinstance(runner, DaskTaskRunner) else None


def _stages_on_dask(
    dask: DaskTaskRunner, data_dir: Path, settings: Settings, run: Run
) -> tuple[pd.DataFrame, dict[str, Arrays], dict[str, TrainedModel]]:
    """ingestion in shards across the workers -> validation -> preprocessing -> the models
    at once (the hybrid after the baseline it starts from), each worker process with its
    own TensorFlow threads."""
    limit_worker_threads(dask, settings.runner)
    described = describe_shard.map(plan_shards(data_dir, settings))
    images = timed(ingest_images, settings)(data_dir, settings, run, described)
    validate(images, settings, run)
    arrays = preprocess_images.submit(images, settings, run)  # stays on the cluster
    training: dict[str, PrefectFuture[TrainedModel]] = {}
    fit = timed(train, settings)
    for name in training_order(settings.train):
        first = waits_for(name, settings.train)
        baseline = training[first] if first else None
        training[name] = fit.submit(name, arrays, settings, run, baseline=baseline)
    trained = {name: future.result() for name, future in training.items()}
    return images, arrays.result(), trained


def run_training_flow(
    data_dir: str,
    profile: str | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """:func:`training_flow` on the task runner its settings select (``runner``)."""
    settings = load_settings(profile, Path(config_file) if config_file else None, overrides)
    runner = task_runner(settings.runner)
    arguments = {"data_dir": data_dir, "profile": profile, "config_file": config_file}
    arguments |= {"overrides": overrides, "run_id": run_id}
    if runner is None:
        return training_flow(**arguments)
    # the workers get the flow's Prefect settings with each task: the API URL among them
    with temporary_settings({PREFECT_API_URL: prefect_api_url()}):
        return training_flow.with_options(task_runner=runner)(**arguments)
