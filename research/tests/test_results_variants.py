"""The cross-run report keeps runs whose settings differ from their profile apart, and
reads older runs' settings under today's names."""

from __future__ import annotations

import json
from pathlib import Path

from cxr.core.config import load_settings
from research.results import load_runs, variants_section
from research.run_settings import settings_fingerprint

MODEL = {
    "test": {"accuracy": 0.9, "threshold": 0.5},
    "history": {"accuracy": [0.9], "val_accuracy": [0.9]},
}


def _run(runs: Path, name: str, overrides: dict) -> None:
    folder = runs / name
    folder.mkdir(parents=True)
    config = load_settings("recipe", overrides=overrides, environ={}).model_dump(mode="json")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps({"models": {"resnet50": MODEL}}))


def test_runs_of_other_settings_are_their_own_variant(tmp_path: Path) -> None:
    _run(tmp_path, "a-seed1", {"train.seed": 1})
    _run(tmp_path, "a-seed2", {"train.seed": 2, "train.verbose": 0})  # same variant
    _run(tmp_path, "b-seed1", {"train.seed": 1, "train.epochs": 5})
    runs = {r.run_id: r for r in load_runs(tmp_path)}
    assert runs["a-seed1"].profile == runs["a-seed2"].profile == "recipe"
    other = runs["b-seed1"]
    assert other.profile == f"recipe ({settings_fingerprint(other.config)})"
    (line,) = variants_section(list(runs.values()))
    assert line == f"- `{other.profile}`: `train.epochs` 5 (now 24)"


def test_settings_added_later_take_their_default(tmp_path: Path) -> None:
    _run(tmp_path, "old", {})
    config_file = tmp_path / "old" / "config.json"
    config = json.loads(config_file.read_text())
    del config["decision"]  # a run from before the section existed
    config_file.write_text(json.dumps(config))
    (old,) = load_runs(tmp_path)
    assert old.variant  # the default (False) differs from the recipe's True
    assert "`decision.cutoff_from_validation` false (now true)" in variants_section([old])[0]


def _old_names(config_file: Path, calibrate: bool) -> None:
    """Write a run's config as an earlier version did: the cut-off settings under
    ``gate``, and settings since removed at the values those runs had."""
    config = json.loads(config_file.read_text())
    decision = config.pop("decision")
    config["gate"]["threshold"] = config["gate"].pop("min_score")
    config["gate"]["decision_threshold"] = decision["cutoff"]
    config["gate"]["calibrate_threshold"] = calibrate
    config["preprocess"]["equalize"] = False
    config["model"]["backbone_trainable_from"] = "conv1"
    config["train"] |= {"optimizer": "adam", "weight_decay": 0.0, "ema_momentum": None}
    config["train"] |= {"early_stopping_patience": 6, "precise_bn_images": 0}
    config["train"]["augmentation"]["horizontal_flip"] = False
    config_file.write_text(json.dumps(config))


def test_old_setting_names_are_read_as_the_new_ones(tmp_path: Path) -> None:
    _run(tmp_path, "same", {})
    _run(tmp_path, "other", {})
    _old_names(tmp_path / "same" / "config.json", calibrate=True)
    _old_names(tmp_path / "other" / "config.json", calibrate=False)
    runs = {r.run_id: r for r in load_runs(tmp_path)}
    assert runs["same"].profile == "recipe"  # removed settings are ignored
    assert runs["same"].config["decision"]["cutoff_from_validation"] is True
    assert "calibrate_threshold" not in runs["same"].config["gate"]
    (line,) = variants_section([runs["other"]])
    assert line.endswith(": `decision.cutoff_from_validation` false (now true)")


def test_the_cut_off_column_reads_old_and_new_records() -> None:
    from research.results import _cutoff

    test = {"test": {"threshold": 0.2}}
    assert _cutoff(test | {"cutoff": {"value": 0.2, "chosen_on": "validation"}}) == (
        "0.200 (validation)"
    )
    assert _cutoff(test | {"decision_threshold": {"chosen_on": "validation"}}) == (
        "0.200 (validation)"
    )
    assert _cutoff(test) == "0.200 (config)"


def test_findings_judge_test_and_unseen_accuracy_apart(tmp_path: Path) -> None:
    from research.results import findings

    _run(tmp_path, "a-seed1", {"train.seed": 1})
    unseen = tmp_path / "a-seed1" / "unseen"
    unseen.mkdir()
    (unseen / "resnet50.json").write_text(json.dumps({"accuracy": 0.91, "n": 400}))
    metrics = tmp_path / "a-seed1" / "metrics.json"
    metrics.write_text(json.dumps({"models": {"resnet50": MODEL | {"test": {"accuracy": 0.94}}}}))
    lines = [line for line in findings(load_runs(tmp_path)) if "ResNet50:" in line]
    assert lines == [
        "- `recipe` ResNet50: mean test accuracy 0.9400 over 1 seed, which matches or beats "
        "the paper's 0.93; on the unseen images 0.9100, which falls short of it."
    ]


def test_archive_keeps_the_record_of_a_run_without_its_bulk(tmp_path: Path) -> None:
    from research.results import archive_runs

    runs, records = tmp_path / "runs", tmp_path / "records"
    _run(runs, "a-seed1", {"train.seed": 1})
    (runs / "a-seed1" / "models").mkdir()
    (runs / "a-seed1" / "models" / "resnet50.keras").write_bytes(b"weights")
    (runs / "unfinished").mkdir()  # no metrics.json: not a finished run
    assert archive_runs(runs, records) == ["a-seed1"]
    unseen = runs / "a-seed1" / "unseen"
    unseen.mkdir()
    (unseen / "resnet50.json").write_text(json.dumps({"accuracy": 0.91, "n": 400}))
    archive_runs(runs, records)  # evaluated later: the record is brought up to date
    assert sorted(p.relative_to(records).as_posix() for p in records.rglob("*.*")) == [
        "a-seed1/config.json",
        "a-seed1/metrics.json",
        "a-seed1/unseen/resnet50.json",
    ]
    (kept,) = load_runs(records)
    (original,) = load_runs(runs)
    assert (kept.config, kept.metrics, kept.unseen) == (
        original.config,
        original.metrics,
        original.unseen,
    )


TESTED = {
    "n": 200,
    "accuracy": 0.94,
    "accuracy_ci95": [0.9, 0.97],
    "precision": 0.95,
    "recall": 0.93,
    "f1": 0.94,
    "roc_auc": 0.98,
    "threshold": 0.3,
    "confusion": {"tp": 93, "fn": 7, "fp": 5, "tn": 95},
}


def test_the_report_command_archives_records_and_writes_the_report(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from research.results import app

    runs, out = tmp_path / "runs", tmp_path / "research" / "RESULTS.md"
    _run(runs, "a-seed1", {"train.seed": 1})
    model = {
        "best_epoch": 1,
        "best_epoch_metrics": {"loss": 0.2, "accuracy": 0.9, "val_loss": 0.3, "val_accuracy": 0.9},
        "train_seconds": 60.0,
        "test": TESTED,
        "cutoff": {"value": 0.3, "chosen_on": "validation"},
        "history": {"accuracy": [0.8, 0.9], "val_accuracy": [0.85, 0.9]},
    }
    metrics = {"models": {"resnet50": model}, "wall_seconds": 120.0}
    (runs / "a-seed1" / "metrics.json").write_text(json.dumps(metrics))
    (runs / "a-seed1" / "unseen").mkdir()
    unseen = TESTED | {"n": 400, "model": "a-seed1/models/resnet50.keras"}
    (runs / "a-seed1" / "unseen" / "resnet50.json").write_text(json.dumps(unseen))

    done = CliRunner().invoke(app, ["--runs-dir", str(runs), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert (out.parent / "results" / "runs" / "a-seed1" / "unseen" / "resnet50.json").is_file()
    assert (out.parent / "results" / "curves_recipe.png").is_file()
    text = out.read_text()
    assert "Generated by `python -m research.results`" in text
    assert "![recipe curves](results/curves_recipe.png)" in text
    assert "| ResNet50 | recipe | seed 1 | 200 | 0.9400 (0.900-0.970) |" in text
    assert "| 0.300 (validation) |" in text
    assert "| ResNet50 | recipe | seed 1 | checkpoint | 400 |" in text

    missing = CliRunner().invoke(app, ["--runs-dir", str(tmp_path / "no"), "--out", str(out)])
    assert missing.exit_code == 0  # the records archived above are reported again
    nothing = tmp_path / "elsewhere" / "RESULTS.md"
    failed = CliRunner().invoke(app, ["--runs-dir", str(tmp_path / "no"), "--out", str(nothing)])
    assert failed.exit_code == 2 and "neither" in failed.output


def test_the_report_runs_as_a_module_with_its_defaults() -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    shown = subprocess.run(
        [sys.executable, "-m", "research.results", "--help"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "runs/results/runs" in shown.stdout and "research/RESULTS.md" in shown.stdout
