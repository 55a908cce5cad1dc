"""The drift decision: weighted Holm over the per-column tests at a family-wise level,
so one strong shift is drift on its own and one weak column among many is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr.core.config import MonitorConfig, load_settings
from cxr.core.errors import ConfigError
from cxr.monitor.drift import column_p_values, column_weights, decide, detect_drift, holm
from cxr.monitor.reference import (
    IMAGE_COLUMNS,
    build_reference,
    split_predictions,
    training_statistics,
)

COLUMNS = [
    "covid_probability", "mean_intensity", "std_intensity", "entropy", "sharpness",
    "dark_fraction", "ood_score", "label",
]  # fmt: skip


def _columns(**p_values: float | None) -> list[dict]:
    return [{"column": c, "test": "t", "p_value": p_values.get(c, 0.5)} for c in COLUMNS]


def test_holm_adjusts_known_p_values() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, then max(0.06, 0.04*1) = 0.06
    adjusted, rejected = holm([0.01, 0.04, 0.03, 0.005], 0.05)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert rejected == [True, False, False, True]
    adjusted, rejected = holm([0.2, None, 0.01], 0.05)  # an untested column is left out
    assert adjusted == pytest.approx([0.2, None, 0.02]) and rejected == [False, False, True]
    assert holm([0.9, 0.3], 0.05)[0] == pytest.approx([0.9, 0.6])  # monotone: max(0.6, 0.9)
    assert holm([0.9, 0.8], 0.05)[0] == pytest.approx([1.0, 1.0])  # capped at 1


def test_weighted_holm_tests_each_column_at_its_share_of_the_level() -> None:
    # weights 3:1 -> first tests at 0.0375 and 0.0125; a rejection passes its weight on
    adjusted, rejected = holm([0.03, 0.02], 0.05, weights=[3.0, 1.0])
    assert adjusted == pytest.approx([0.04, 0.04]) and rejected == [True, True]
    adjusted, rejected = holm([0.03, 0.2], 0.05, weights=[1.0, 3.0])
    assert adjusted == pytest.approx([0.12, 0.2]) and rejected == [False, False]
    assert holm([0.01, 0.04, 0.03, 0.005], 0.05, [2.0] * 4) == holm(
        [0.01, 0.04, 0.03, 0.005], 0.05
    )  # equal weights: plain Holm
    assert column_weights(["a", "ood_score", "b"], 0.5) == [0.25, 0.5, 0.25]
    assert column_weights(["a", "b"], 0.5) == [1.0, 1.0]  # no OOD score: equal


def test_the_ood_score_has_its_share_of_the_level() -> None:
    half = MonitorConfig(ood_level_share=0.5)
    decision = decide(_columns(ood_score=0.02), half)  # tested at 0.025
    assert decision.status == "drift" and decision.drifted_columns == ["ood_score"]
    assert decision.columns[6]["adjusted_p_value"] == pytest.approx(0.04)
    equal = MonitorConfig(ood_level_share=1 / 8)  # plain Holm over the eight columns
    assert decide(_columns(ood_score=0.02), equal).status == "no_drift"
    # the other seven share the other half: 0.02 / (0.5 / 7) = 0.28
    entropy = decide(_columns(entropy=0.02), half).columns[3]
    assert entropy["adjusted_p_value"] == pytest.approx(0.28) and not entropy["drifted"]
    # without an OOD score (a model packaged before the check) the rest share all of it
    alone = decide(_columns(entropy=0.02, ood_score=None), half).columns[3]
    assert alone["adjusted_p_value"] == pytest.approx(0.14)


def test_prediction_drift_alone_is_drift() -> None:
    decision = decide(_columns(covid_probability=1e-4), MonitorConfig())
    assert decision.status == "drift" and decision.drifted_columns == ["covid_probability"]
    assert decision.reasons[0].startswith("predictions: covid_probability")


def test_one_weak_column_among_many_is_not_drift() -> None:
    decision = decide(_columns(entropy=0.02), MonitorConfig())  # below 0.05 uncorrected
    assert decision.status == "no_drift" and decision.drifted_columns == []
    entropy = next(c for c in decision.columns if c["column"] == "entropy")
    # seven columns share the half of the level the OOD score does not have
    assert entropy["adjusted_p_value"] == pytest.approx(0.28) and not entropy["drifted"]


def test_the_issues_tuberculosis_window_is_drift() -> None:
    # issue 15: 3 of 7 columns under 0.05 and "half of the columns" said no drift
    columns = _columns(entropy=8e-6, label=0.02, covid_probability=0.047, ood_score=None)
    decision = decide(columns, MonitorConfig())
    assert decision.status == "drift" and decision.drifted_columns == ["entropy"]
    assert decision.reasons == ["image statistics: entropy (p=8e-06, Holm 5.6e-05)"]


def test_a_strong_shift_of_one_column_is_drift_and_the_same_population_is_not() -> None:
    rng = np.random.default_rng(0)

    def frame(n: int, ood_shift: float = 0.0) -> pd.DataFrame:
        p = rng.beta(2, 5, n)
        values = {c: rng.normal(0, 1, n) for c in COLUMNS[1:-1]}
        values["ood_score"] = rng.gamma(4.0, 10.0, n) + ood_shift
        return pd.DataFrame(
            {"covid_probability": p, **values, "label": np.where(p >= 0.5, "COVID", "Normal")}
        )

    config, reference = MonitorConfig(), frame(120)
    shifted = decide(column_p_values(reference, frame(60, ood_shift=40.0), config), config)
    assert shifted.status == "drift" and shifted.drifted_columns == ["ood_score"]
    assert shifted.reasons[0].startswith("out-of-distribution score: ood_score")
    numeric = config.model_copy(update={"categorical_columns": []})  # KS only: fast
    alarms = sum(
        decide(column_p_values(reference, frame(60), numeric), numeric).status == "drift"
        for _ in range(100)
    )
    assert alarms <= 8  # family-wise level 0.05 over 7 columns (uncorrected: about 1 in 3)


@pytest.mark.parametrize("old", ["drift_share", "column_p_value", "prediction_p_value"])
def test_the_old_settings_are_refused_with_the_new_name(old: str) -> None:
    with pytest.raises(ConfigError, match=f"monitor.{old} is now monitor.family_p_value"):
        load_settings("demo", overrides={f"monitor.{old}": 0.5}, environ={})


def test_the_reference_takes_validation_rows_with_the_test_rows_columns(tmp_path) -> None:
    def write(name: str, paths: list[str], **extra: list) -> None:
        frame = pd.DataFrame({"path": paths, **extra})
        if not extra:  # a predictions file; the OOD files have the path and scores
            frame = frame.assign(label_index=1, covid_probability=0.9)
        frame.to_csv(tmp_path / name, index=False)

    write("m_test.csv", ["t0", "t1"])
    assert split_predictions(tmp_path, "m")["path"].tolist() == ["t0", "t1"]  # no val yet
    write("m_val.csv", ["v0"])
    assert split_predictions(tmp_path, "m")["path"].tolist() == ["t0", "t1", "v0"]
    write("m_test_ood.csv", ["t0", "t1"], ood_score=[1.0, 2.0])
    rows = split_predictions(tmp_path, "m")  # validation without OOD scores: left out
    assert rows["path"].tolist() == ["t0", "t1"] and rows["ood_score"].notna().all()
    write("m_val_ood.csv", ["v0"], ood_score=[3.0])
    assert split_predictions(tmp_path, "m")["ood_score"].tolist() == [1.0, 2.0, 3.0]


def test_training_rows_join_the_reference_for_the_image_statistics_alone(tmp_path) -> None:
    stats = {c: 1.0 for c in IMAGE_COLUMNS if c not in ("mode",)} | {"mode": "L"}
    images = pd.DataFrame(
        {"path": ["t0", "t1", "a", "b", "c"], "label": ["COVID", "Normal"] * 2 + ["COVID"],
         **stats}
    ).assign(entropy=[7.0, 7.1, 6.0, 6.5, 6.9])  # fmt: skip
    split = pd.DataFrame({"path": ["t0", "t1", "a", "b", "c"],
                          "split": ["test", "test", "train", "train", "val"]})  # fmt: skip
    training = training_statistics(images, split)
    assert training["path"].tolist() == ["a", "b"]  # the training split only
    predictions = pd.DataFrame(
        {"path": ["t0", "t1"], "label_index": [1, 0], "covid_probability": [0.9, 0.2],
         "ood_score": [0.5, 0.7], "in_distribution": [True, True]}
    )  # fmt: skip
    reference = build_reference(images, predictions, ["Normal", "COVID"], 0.5, training)
    assert reference["part"].tolist() == ["evaluation"] * 2 + ["training_statistics"] * 2
    assert reference["entropy"].tolist() == [7.0, 7.1, 6.0, 6.5]  # statistics of all four
    for column in ("covid_probability", "ood_score", "label"):  # the model's: two rows only
        assert reference[column].notna().sum() == 2, column
    # each column is tested on its own non-empty rows, in Evidently's report as here
    rng = np.random.default_rng(5)
    n = 40
    big = build_reference(
        pd.DataFrame({"path": [f"p{i}" for i in range(3 * n)], "label": "COVID", **stats})
        .assign(entropy=rng.normal(7, 0.3, 3 * n)),
        pd.DataFrame({"path": [f"p{i}" for i in range(n)], "label_index": 1,
                      "covid_probability": rng.random(n), "ood_score": rng.gamma(2, 1, n),
                      "in_distribution": True}),
        ["Normal", "COVID"], 0.5,
        pd.DataFrame({"path": [f"p{i}" for i in range(n, 3 * n)], "label": "COVID", **stats})
        .assign(entropy=rng.normal(7, 0.3, 2 * n)),
    )  # fmt: skip
    current = big.iloc[:n].assign(entropy=rng.normal(7, 0.3, n)).drop(columns="part")
    config = MonitorConfig()
    direct = {c["column"]: c["p_value"] for c in column_p_values(big, current, config)}
    summary = detect_drift(big, current, config, ("", ""), tmp_path)
    for column in summary.columns:
        assert column["p_value"] == pytest.approx(direct[column["column"]], rel=1e-9)
    assert summary.reference_rows == 3 * n
