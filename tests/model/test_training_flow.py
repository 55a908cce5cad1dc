"""The whole training flow through the CLI, on real radiographs from ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import pandas as pd
import pytest
from PIL import Image

from cxr.core.model_store import read_serving_info
from tests.conftest import last_json, real_images, run_cli

pytestmark = pytest.mark.slow
FAST = ["--profile", "demo", "--image-size", "32", "--epochs", "1"]
FAST += ["--set", "data.min_images_per_class=5", "--set", "train.fine_tune_epochs=1"]


def _artifact_keys(flow_run_id: str) -> set[str]:
    """Keys of the artifacts the Prefect API holds for one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        return {a.key for a in client.read_artifacts(artifact_filter=flt)}


def _progress_and_log_lines(flow_run_id: str) -> tuple[dict[str, float], list[str]]:
    """The progress artifacts (key: percent) and the log lines of one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
        LogFilter,
        LogFilterFlowRunId,
    )

    artifacts = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
        type=ArtifactFilterType(any_=["progress"]),
    )
    logs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    lines: list[str] = []
    with get_client(sync_client=True) as client:
        progress = {a.key: a.data for a in client.read_artifacts(artifact_filter=artifacts)}
        while batch := client.read_logs(log_filter=logs, limit=200, offset=len(lines)):
            lines += [log.message for log in batch]
    return progress, lines


def _run_dir(runs: Path) -> Path:
    (run,) = list(runs.iterdir())
    return run


@pytest.mark.real_data
def test_flow_validates_trains_gates_and_packages(prefect_server, small_real_dataset, tmp_path):
    good = real_images("COVID", 31)[30].read_bytes()
    corrupt = small_real_dataset / "COVID" / "images" / "COVID-corrupt.png"
    corrupt.write_bytes(good[:2000])
    runs = tmp_path / "runs"
    args = ["train", "--data-dir", str(small_real_dataset), *FAST, "--gate-min-score", "0"]
    args += ["--set", "decision.cutoff_from_validation=true", "--epochs", "2"]  # hybrid: 1
    result = run_cli(*args, "--runs-dir", str(runs), "--run-id", "seed-1", api_url=prefect_server)
    assert result.returncode == 0, result.stderr[-3000:]
    tags = last_json(result.stdout)
    run = _run_dir(runs)
    assert run.name == "seed-1"

    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["models"]) == {"resnet50_lstm", "resnet50", "lstm"}
    for name, model in metrics["models"].items():
        assert model["test"]["n"] == 6 and 0 <= model["test"]["accuracy"] <= 1
        assert model["train_images_per_second"] > 0  # what a retraining costs here
        assert len(model["test"]["accuracy_ci95"]) == 2
        assert model["cutoff"]["chosen_on"] == "validation"
        assert model["test"]["threshold"] == model["cutoff"]["value"]
        assert (run / "plots" / f"{name}_curves.png").is_file()
        assert (run / "plots" / f"{name}_confusion.png").is_file()
        assert (run / "plots" / f"{name}_roc.png").is_file()
        roc = pd.read_csv(run / "plots" / f"{name}_roc.csv")
        assert roc["fpr"].iloc[[0, -1]].tolist() == [0, 1] and roc["tpr"].is_monotonic_increasing
    assert metrics["gate"]["passed"] is True and metrics["synthetic"] is False
    assert metrics["split_sizes"] == {"train": 48, "val": 6, "test": 6}
    assert 0 < metrics["wall_seconds"] < 1200
    assert metrics["package"] == {"model_tag": tags["model_tag"], "bento_tag": tags["bento_tag"]}
    assert "ResNet50-LSTM | paper" in (run / "comparison.md").read_text()
    assert (run / "data_docs" / "index.html").is_file()

    published = _artifact_keys(metrics["prefect_flow_run_id"])
    assert {"ingestion-summary", "data-validation", "split", "paper-comparison"} <= published
    assert "gate" in published
    assert {"resnet50-lstm-training-curves", "lstm-confusion-matrix", "package"} <= published
    assert {"lstm-roc-curve", "resnet50-lstm-roc-curve", "resnet50-lstm-roc-points"} <= published
    # each epoch: a line in the run's log and a step of the model's progress artifact
    progress, lines = _progress_and_log_lines(metrics["prefect_flow_run_id"])
    assert progress == {
        f"{n}-training-progress": 100.0 for n in ("resnet50", "resnet50-lstm", "lstm")
    }
    epochs = {"resnet50": 2, "resnet50_lstm": 1, "lstm": 2}  # the hybrid: fine_tune_epochs
    for name, total in epochs.items():
        done = [line for line in lines if line.startswith(f"{name} epoch ")]
        assert [line.split(":")[0] for line in done] == [
            f"{name} epoch {i}/{total}" for i in range(1, total + 1)
        ]
        assert all(" val_accuracy " in line and line.endswith(" images/s") for line in done)

    split = (run / "split.csv").read_text()
    assert "COVID-corrupt.png" not in split and split.count("\n") == 61
    assert "COVID-corrupt.png" in (run / "ingestion" / "unreadable.csv").read_text()

    stored = bentoml.models.get(tags["model_tag"])
    assert stored.info.metadata["run_id"] == run.name
    assert stored.info.metadata["dataset_fingerprint"] == metrics["dataset_fingerprint"]
    assert stored.info.metadata["git_commit"]
    shipped_threshold = metrics["models"]["resnet50_lstm"]["test"]["threshold"]
    assert read_serving_info(stored)["cutoff"] == shipped_threshold
    reference = pd.read_csv(Path(stored.path) / "reference.csv")
    assert len(reference) == 12  # the 6 validation and 6 test images
    assert reference["covid_probability"].between(0, 1).all()
    assert {"label", "actual_label", "width", "mode", "mean_intensity", "entropy"} <= set(
        reference.columns
    )
    assert bentoml.bentos.get(tags["bento_tag"]).info.labels["project"] == "cxr-mlops"

    evaluated = run_cli(
        "evaluate", "--model", tags["model_tag"], "--data-dir", str(small_real_dataset)
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout)
    assert report["n"] == 60 and report["model"] == tags["model_tag"]
    assert [row["path"].endswith("COVID-corrupt.png") for row in report["unreadable"]] == [True]

    # a baseline the gate did not ship, by its checkpoint; then the report over runs
    checkpoint = run / "models" / "lstm.keras"
    unseen = run / "unseen" / "lstm.json"
    args = ["evaluate", "--model", str(checkpoint), "--data-dir", str(small_real_dataset)]
    evaluated = run_cli(*args, "--output", str(unseen))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(unseen.read_text())["n"] == 60
    lstm_threshold = metrics["models"]["lstm"]["test"]["threshold"]
    assert json.loads(unseen.read_text())["threshold"] == lstm_threshold


@pytest.mark.real_data
def test_model_under_the_minimum_is_not_packaged(prefect_server, small_real_dataset, tmp_path):
    # A learning rate of 0 keeps the untrained model (here every answer falls on one side
    # of 0.5, so half of the balanced test split is right): far below the minimum.
    runs = tmp_path / "runs"
    args = ["train", "--data-dir", str(small_real_dataset), *FAST, "--model", "lstm"]
    args += ["--set", "gate.model=lstm", "--set", "packaging.model_name=cxr-rejected"]
    args += ["--learning-rate", "0", "--gate-min-score", "0.95"]
    result = run_cli(*args, "--runs-dir", str(runs), api_url=prefect_server)
    assert result.returncode == 4, result.stderr[-3000:]
    metrics = json.loads((_run_dir(runs) / "metrics.json").read_text())
    gate = metrics["gate"]
    assert metrics["wall_seconds"] > 0  # recorded when the gate rejects too
    assert gate["value"] < 0.95 and gate["min_score"] == 0.95 and gate["passed"] is False
    assert "error: gate REJECTED: lstm test accuracy" in result.stderr
    assert "nothing was packaged" in result.stderr
    with pytest.raises(bentoml.exceptions.NotFound):
        bentoml.models.list("cxr-rejected")


@pytest.mark.real_data
def test_wrong_size_dataset_stops_before_training(prefect_server, tmp_path):
    root = tmp_path / "data"
    for label in ("COVID", "Normal"):
        (root / label).mkdir(parents=True)
        for path in real_images(label, 10):
            Image.open(path).resize((320, 320)).save(root / label / path.name)
    runs = tmp_path / "runs"
    args = ["train", "--data-dir", str(root), *FAST, "--runs-dir", str(runs)]
    result = run_cli(*args, api_url=prefect_server)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "expect_column_values_to_be_between on width" in result.stderr
    run = _run_dir(runs)
    assert not (run / "models").exists() and not (run / "split.csv").exists()
    assert json.loads((run / "validation.json").read_text())["success"] is False


def test_bad_inputs_are_clear_cli_errors(tmp_path):
    missing = run_cli("train", "--data-dir", str(tmp_path / "nope"), *FAST)
    assert missing.returncode == 2 and "data folder not found" in missing.stderr
    bad_profile = run_cli("train", "--data-dir", str(tmp_path), "--profile", "x")
    assert bad_profile.returncode == 2 and "unknown profile" in bad_profile.stderr
    bad_id = run_cli("train", "--data-dir", str(tmp_path), "--run-id", "../up")
    assert bad_id.returncode == 2 and "run id '../up'" in bad_id.stderr
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    args = ["--runs-dir", str(tmp_path / "runs"), "--run-id", "taken"]
    taken = run_cli("train", "--data-dir", str(tmp_path), *args)
    assert taken.returncode == 2 and "exists; pick a new id" in taken.stderr
    no_config = run_cli("train", "--data-dir", str(tmp_path), "--config", str(tmp_path / "c.yaml"))
    assert no_config.returncode == 2 and "config file not found" in no_config.stderr
    # answered before Prefect starts: no temporary server, no run folder
    assert "prefect" not in (missing.stderr + bad_id.stderr + taken.stderr).lower()
    assert list((tmp_path / "runs").iterdir()) == [tmp_path / "runs" / "taken"]
    no_checkpoint = run_cli("evaluate", "--model", str(tmp_path / "x.keras"), "--data-dir", ".")
    assert no_checkpoint.returncode == 2 and "checkpoint not found" in no_checkpoint.stderr
    renamed = run_cli("train", "--data-dir", str(tmp_path), "--set", "gate.threshold=0.9")
    assert renamed.returncode == 2 and "gate.threshold is now gate.min_score" in renamed.stderr
    bad_set = run_cli("train", "--data-dir", str(tmp_path), "--set", "gate.min_score")
    assert bad_set.returncode == 2 and "--set needs key=value" in bad_set.stderr
    no_model = run_cli("evaluate", "--model", "nope:latest", "--data-dir", ".")
    assert no_model.returncode == 2 and "not found" in no_model.stderr
