"""Metrics (COVID positive), the Wilson interval, the gate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxr.core.config import GateConfig
from cxr.core.errors import GateRejectedError
from cxr.train.evaluation import choose_cutoff, compute_metrics, wilson_interval
from cxr.train.gate import decide, enforce


def test_paper_resnet50_lstm_confusion_gives_paper_metrics() -> None:
    # Table 5: TP 47 FN 3 / FP 2 TN 48 -> accuracy 0.95, precision 0.96, recall 0.94, F1 0.95.
    y = np.array([1] * 50 + [0] * 50)
    prob = np.array([0.9] * 47 + [0.1] * 3 + [0.9] * 2 + [0.1] * 48)
    m = compute_metrics(y, prob, cutoff=0.5)
    assert m["confusion"] == {"tp": 47, "fn": 3, "fp": 2, "tn": 48}
    assert m["accuracy"] == pytest.approx(0.95)
    assert round(m["precision"], 2) == 0.96 and round(m["recall"], 2) == 0.94
    assert round(m["f1"], 2) == 0.95


def test_wilson_interval_matches_reference() -> None:
    low, high = wilson_interval(95, 100)
    assert (round(low, 3), round(high, 3)) == (0.888, 0.978)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def _counts() -> list[tuple[int, int]]:
    """(successes, total): every pair up to 300 (0 and total included), and the ends and
    random middles of large totals."""
    rng = np.random.default_rng(0)
    pairs = [(k, n) for n in range(1, 301) for k in range(n + 1)]
    for n in [*range(301, 5001, 37), 10**4, 123_457, 10**6]:
        pairs += [(0, n), (1, n), (n - 1, n), (n, n), *((int(k), n) for k in rng.integers(0, n, 5))]
    return pairs


def test_wilson_interval_contains_its_point_estimate() -> None:
    """The property every confidence interval must have, with no exception at 0 or 1
    (where rounding once put the bound a hair inside the estimate)."""
    outside = []
    for successes, total in _counts():
        low, high = wilson_interval(successes, total)
        p = successes / total
        if not 0.0 <= low <= p <= high <= 1.0:
            outside.append((successes, total, low, p, high))
    assert not outside, f"{len(outside)} intervals miss their estimate, e.g. {outside[:3]}"
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_metrics_accuracy_interval_contains_the_accuracy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n in [1, 2, 3, 4, 5, 8, 10, 13, 60, 100, 257]:
        y = rng.integers(0, 2, n)
        for prob in (rng.random(n), y * 0.8 + 0.1, (1 - y) * 0.8 + 0.1):  # any, right, wrong
            m = compute_metrics(y, prob, cutoff=0.5)
            low, high = m["accuracy_ci95"]
            assert 0.0 <= low <= m["accuracy"] <= high <= 1.0, (n, m)
    assert compute_metrics(y, y * 0.8 + 0.1, 0.5)["accuracy_ci95"][1] == 1.0
    assert compute_metrics(y, (1 - y) * 0.8 + 0.1, 0.5)["accuracy_ci95"][0] == 0.0


def test_threshold_chosen_on_validation_sits_between_the_classes() -> None:
    # a model whose COVID probabilities all sit low: 0.5 calls every COVID image Normal
    y = np.array([1, 1, 1, 0, 0, 0])
    prob = np.array([0.40, 0.35, 0.30, 0.10, 0.05, 0.20])
    threshold, accuracy = choose_cutoff(y, prob)
    assert accuracy == 1.0 and 0.20 < threshold < 0.30
    assert compute_metrics(y, prob, threshold)["accuracy"] == 1.0


def test_cutoff_between_separated_classes_and_on_ties() -> None:
    y = np.array([1, 0, 1, 0])
    prob = np.array([0.9, 0.1, 0.8, 0.2])
    threshold, accuracy = choose_cutoff(y, prob)
    assert accuracy == 1.0 and 0.2 < threshold < 0.8  # any cut-off between the classes
    tied = np.array([0.5, 0.5, 0.5, 0.5])
    assert choose_cutoff(y, tied) == (0.5, 0.5)


def test_auc_is_none_with_one_class() -> None:
    assert compute_metrics(np.ones(4), np.full(4, 0.7), 0.5)["roc_auc"] is None


@pytest.mark.parametrize(("accuracy", "passed"), [(0.95, True), (0.97, True), (0.9499, False)])
def test_gate_minimum_is_inclusive(accuracy: float, passed: bool) -> None:
    decision = decide({"accuracy": accuracy}, GateConfig(min_score=0.95))
    assert decision.passed is passed
    if passed:
        enforce(decision)
    else:
        with pytest.raises(GateRejectedError, match="REJECTED.*0.9499"):
            enforce(decision)


def test_missing_metric_never_passes() -> None:
    decision = decide({"roc_auc": None}, GateConfig(metric="roc_auc", min_score=0.0))
    assert math.isnan(decision.value) and not decision.passed
