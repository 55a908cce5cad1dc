"""The model code is pure Keras 3: the recipe trains on the JAX backend too, through the
GPU script (``research/gpu_run.py``).

A GPU user (typically with JAX and no TensorFlow) trains with ``KERAS_BACKEND=jax``; a
``tf.*`` call slipped into a model, a callback or the optimiser set-up would break that
path while every TensorFlow test stays green. The backend is fixed when Keras is
imported, so the script runs in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TUBERCULOSIS, link_dataset, real_images

pytestmark = [pytest.mark.slow, pytest.mark.real_data]
# the recipe (augmentation, warm-up + cosine, the hybrid from the baseline's backbone, the
# cut-off chosen on validation), small and short
SETTINGS = {
    "preprocess.image_size": 32,
    "preprocess.batch_size": 8,
    "train.epochs": 2,
    "train.verbose": 0,
}


def _script(*args: str, backend: str = "tensorflow") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run(
        [sys.executable, "-m", "research.gpu_run", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900,
    )  # fmt: skip


def test_recipe_trains_on_the_jax_backend_through_the_gpu_script(tmp_path: Path) -> None:
    pool = link_dataset(
        tmp_path / "pool", {"COVID": real_images("COVID", 30), "Normal": real_images("Normal", 30)}
    )
    unseen = link_dataset(
        tmp_path / "unseen",
        {
            "COVID": real_images("COVID", 5, offset=30),
            "Normal": real_images("Normal", 5, offset=30),
        },
    )
    bundle = tmp_path / "bundle"
    tb = tmp_path / "tb"
    tb.mkdir()
    for path in sorted(TUBERCULOSIS.glob("*.png"))[:12]:
        (tb / path.name).symlink_to(path)
    args = ["bundle", "--pool", str(pool), "--unseen", str(unseen), "--out", str(bundle)]
    made = _script(*args, "--tuberculosis", str(tb))
    assert made.returncode == 0, made.stderr[-3000:]
    again = _script(*args)  # never written over
    assert again.returncode != 0 and "exists; choose a new folder" in again.stderr
    assert len(list((bundle / "pool" / "COVID").glob("*.png"))) == 30
    assert len(list((bundle / "tuberculosis").glob("*.png"))) == 12

    settings = [f"--set={key}={value}" for key, value in SETTINGS.items()]
    out = tmp_path / "out" / "gpu_run.json"
    args = ["train", "--bundle", str(bundle), "--out", str(out), *settings]
    result = _script(*args, backend="jax")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["devices"]["backend"] == "jax"
    assert report["split_sizes"] == {"train": 48, "val": 6, "test": 6}
    assert report["unseen_n"] == 10 and report["tuberculosis_n"] == 12
    assert set(report["models"]) == {"resnet50", "resnet50_lstm", "lstm"}
    for name, model in report["models"].items():
        assert model["test"]["n"] == 6 and model["unseen"]["n"] == 10, name
        assert model["cutoff"]["chosen_on"] == "validation", name
        assert (
            model["unseen"]["threshold"] == model["test"]["threshold"] == model["cutoff"]["value"]
        )
        assert 0.0 <= model["unseen"]["accuracy"] <= 1.0 and model["train_seconds"] > 0
        ood = model["ood"]  # the check fitted as the flow fits it, on the JAX backend
        assert [ood[k]["n"] for k in ("test", "unseen", "tuberculosis")] == [6, 10, 12], name
        assert 0.0 <= ood["auroc_tuberculosis_vs_unseen"] <= 1.0 and ood["threshold"] > 0
        low, high = ood["auroc_ci95"]
        assert low <= ood["auroc_tuberculosis_vs_unseen"] <= high, name
