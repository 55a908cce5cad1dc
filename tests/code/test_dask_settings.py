"""The ``runner`` settings: which task runner the training flow gets, the TensorFlow
threads of a Dask worker, which model's training waits for which."""

from __future__ import annotations

import pytest
from prefect_dask import DaskTaskRunner

from cxr.core.config import RunnerConfig, TrainConfig, load_settings
from cxr.core.errors import ConfigError
from cxr.train.dask_runner import task_runner, waits_for, worker_threads


def test_the_default_is_the_flows_own_runner_and_dask_is_chosen_by_settings() -> None:
    assert load_settings("demo", environ={}).runner.task_runner == "local"
    assert task_runner(RunnerConfig()) is None
    environ = {"CXR_RUNNER__TASK_RUNNER": "dask", "CXR_RUNNER__DASK_WORKERS": "3"}
    local_cluster = task_runner(load_settings("demo", environ=environ).runner)
    assert isinstance(local_cluster, DaskTaskRunner) and local_cluster.address is None
    assert local_cluster.cluster_kwargs["n_workers"] == 3
    assert local_cluster.cluster_kwargs["threads_per_worker"] == 1
    remote = task_runner(RunnerConfig(task_runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    with pytest.raises(ConfigError, match="runner.task_runner"):
        load_settings("demo", overrides={"runner.task_runner": "spark"}, environ={})
    with pytest.raises(ConfigError, match="runner.dask_workers"):
        load_settings("demo", overrides={"runner.dask_workers": 0}, environ={})


def test_worker_threads_share_the_cores_among_the_workers() -> None:
    assert worker_threads(RunnerConfig(dask_workers=2), cores=16) == 8
    assert worker_threads(RunnerConfig(dask_workers=3), cores=2) == 1
    assert worker_threads(RunnerConfig(dask_workers=2, model_threads=5), cores=16) == 5


def test_only_the_hybrid_that_starts_from_the_baseline_waits_for_it() -> None:
    handed_over = TrainConfig(hybrid_backbone_from_baseline=True)
    assert waits_for("resnet50_lstm", handed_over) == "resnet50"
    assert waits_for("resnet50", handed_over) is None and waits_for("lstm", handed_over) is None
    assert waits_for("resnet50_lstm", TrainConfig()) is None
    alone = TrainConfig(models=["resnet50_lstm", "lstm"], hybrid_backbone_from_baseline=True)
    assert waits_for("resnet50_lstm", alone) is None
