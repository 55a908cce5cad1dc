"""`cxr results` keeps runs whose settings differ from their profile apart."""

from __future__ import annotations

import json
from pathlib import Path

from cxr.core.config import load_settings
from cxr.results import load_runs, variants_section
from cxr.run_settings import settings_fingerprint

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
    del config["gate"]["calibrate_threshold"]  # a run from before the setting existed
    config_file.write_text(json.dumps(config))
    (old,) = load_runs(tmp_path)
    assert old.variant  # the default (False) differs from the recipe's True
    assert "`gate.calibrate_threshold` false (now true)" in variants_section([old])[0]


def test_findings_judge_test_and_unseen_accuracy_apart(tmp_path: Path) -> None:
    from cxr.results import findings

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
    from cxr.results import archive_runs

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
