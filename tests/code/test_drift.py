"""The drift check end to end through Evidently's report: no drift, drift, and not enough
data are three distinct answers, each drifted column named with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr.core.config import MonitorConfig
from cxr.monitor.drift import column_p_values, detect_drift

WINDOW = ("2026-01-01T00:00:00", "2026-01-01T01:00:00")


def _frame(n: int, rng: np.random.Generator, shift: float = 0.0) -> pd.DataFrame:
    probability = rng.beta(5, 2, n) if shift else rng.beta(2, 5, n)
    return pd.DataFrame(
        {
            "covid_probability": probability,
            "label": np.where(probability >= 0.5, "COVID", "Normal"),
            "mean_intensity": rng.normal(120 + shift, 20, n),
            "std_intensity": rng.normal(50 + shift / 4, 8, n),
            "entropy": rng.normal(7 + shift / 100, 0.3, n),
            "sharpness": rng.gamma(2.0, 50.0, n),
            "dark_fraction": rng.beta(2, 8, n),
        }
    )


def test_same_distribution_is_no_drift(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    summary = detect_drift(_frame(200, rng), _frame(80, rng), MonitorConfig(), WINDOW, tmp_path)
    assert summary.status == "no_drift" and summary.current_rows == 80
    assert len(summary.columns) == 7 and all(c["p_value"] is not None for c in summary.columns)
    assert summary.reasons == [] and summary.family_p_value == 0.05  # no ood_score: skipped
    assert Path(summary.report_html).stat().st_size > 10_000
    assert Path(summary.report_json).read_text().startswith("{")


def test_shifted_images_and_predictions_are_drift(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    summary = detect_drift(
        _frame(200, rng), _frame(80, rng, shift=40), MonitorConfig(), WINDOW, tmp_path
    )
    assert summary.status == "drift"
    assert {"covid_probability", "mean_intensity", "label"} <= set(summary.drifted_columns)
    assert "drift:" in summary.headline() and "Holm" in summary.headline()
    assert any(r.startswith("predictions: covid_probability") for r in summary.reasons)
    assert any(r.startswith("image statistics: mean_intensity") for r in summary.reasons)
    assert all(c["adjusted_p_value"] < 0.05 for c in summary.columns if c["drifted"])


def test_predictions_moving_alone_are_drift(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    reference, current = _frame(200, rng), _frame(80, rng)
    current["covid_probability"] = rng.beta(8, 2, 80)  # images unchanged, answers flipped
    summary = detect_drift(reference, current, MonitorConfig(), WINDOW, tmp_path)
    assert summary.status == "drift" and summary.drifted_columns == ["covid_probability"]
    assert summary.drift_share < 0.5 and summary.reasons[0].startswith("predictions")


def test_too_few_predictions_is_not_a_verdict(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    summary = detect_drift(_frame(200, rng), _frame(5, rng, 40), MonitorConfig(), WINDOW, tmp_path)
    assert summary.status == "not_enough_data" and summary.columns == []
    assert summary.report_html is None and "not enough data" in summary.headline()


def test_the_stattests_alone_give_the_reports_p_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    reference, current = _frame(150, rng), _frame(60, rng, shift=10)
    numeric = [c for c in MonitorConfig().numeric_columns if c != "ood_score"]
    config = MonitorConfig(numeric_columns=numeric)
    summary = detect_drift(reference, current, config, WINDOW, tmp_path)
    direct = column_p_values(reference, current, config)
    assert [c["column"] for c in direct] == [c["column"] for c in summary.columns]
    np.testing.assert_allclose(
        [c["p_value"] for c in direct], [c["p_value"] for c in summary.columns], rtol=1e-9
    )


def test_only_a_rise_of_the_ood_score_is_drift_and_the_report_agrees(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    reference, same = _frame(150, rng), _frame(60, rng)
    reference["ood_score"] = rng.gamma(4.0, 0.15, 150)
    further, closer = same.copy(), same.copy()
    further["ood_score"] = rng.gamma(4.0, 0.15, 60) + 0.25  # further from training
    closer["ood_score"] = rng.gamma(4.0, 0.15, 60) - 0.25  # more typical than the reference
    config = MonitorConfig()
    up = detect_drift(reference, further, config, WINDOW, tmp_path / "up")
    down = detect_drift(reference, closer, config, WINDOW, tmp_path / "down")
    assert up.status == "drift" and "ood_score" in up.drifted_columns
    assert any(r.startswith("out-of-distribution score") for r in up.reasons)
    assert "ood_score" not in down.drifted_columns
    ood_p = {s.status: next(c for c in s.columns if c["column"] == "ood_score") for s in (up, down)}
    assert ood_p["drift"]["p_value"] < 1e-4 and ood_p[down.status]["p_value"] > 0.5
    assert ood_p["drift"]["test"] == "ks_greater"  # Evidently's name of the one-sided test
    for summary, current in ((up, further), (down, closer)):  # the stattests alone agree
        direct = column_p_values(reference, current, config)
        np.testing.assert_allclose(
            [c["p_value"] for c in direct], [c["p_value"] for c in summary.columns], rtol=1e-9
        )
