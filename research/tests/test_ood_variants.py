"""The candidate scores of ``research/ood_variants.py`` score what they claim: further
from the training features scores higher, and the probe's ceiling is computed on labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from research import ood_variants


def _training(seed: int = 0) -> np.ndarray:
    """400 rows near a 3-dimensional subspace of 10 dimensions."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(10, 3)))[0].T
    return rng.normal(size=(400, 3)) @ basis * 3 + rng.normal(scale=0.1, size=(400, 10))


def test_residual_is_the_distance_outside_the_principal_directions() -> None:
    train = _training()
    score = ood_variants._residual(train, 3)
    inside, outside = train[:5], train[:5] + np.linalg.svd(train - train.mean(0))[2][5] * 4
    assert np.all(score(inside) < 0.5)
    assert np.all(score(outside) > 3.5)


def test_relative_mahalanobis_and_mixture_rank_a_far_point_above_the_training_rows() -> None:
    train = _training()
    labels = (train[:, 0] > np.median(train[:, 0])).astype(int)
    far = train[:20] + 10.0
    for score in (ood_variants._gmm(train, 2), ood_variants._lw(train)):
        assert score(far).min() > np.quantile(score(train), 0.99)
    # at a class mean the class-conditional distance is 0: the relative score is minus the
    # background distance, never above 0
    relative = ood_variants._relative(train, labels)
    class_mean = train[labels == 0].mean(0, keepdims=True)
    assert relative(class_mean)[0] <= 0


def test_probe_reports_the_separation_the_labels_allow(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    cache = {
        "unseen/conv2_block3_out/mean": rng.normal(size=(100, 8)),
        "tb/conv2_block3_out/mean": rng.normal(size=(100, 8)) + np.r_[3.0, np.zeros(7)],
    }
    np.savez(tmp_path / ood_variants.CACHE, **cache)
    result = CliRunner().invoke(
        ood_variants.app, ["probe", "--run-dir", str(tmp_path), "--spec", "conv2_block3_out"]
    )
    assert result.exit_code == 0, result.output
    aurocs = [float(line.split("AUROC ")[1].split(",")[0]) for line in result.output.splitlines()]
    assert len(aurocs) == 3 and min(aurocs) > 0.95
