"""The monitoring reference joins test predictions with ingestion statistics."""

from __future__ import annotations

import pandas as pd
import pytest

from cxr.monitor.reference import IMAGE_COLUMNS, build_reference


def _images() -> pd.DataFrame:
    rows = [{"path": f"p{i}", **dict.fromkeys(IMAGE_COLUMNS, 1.0), "mode": "L"} for i in range(3)]
    return pd.DataFrame(rows)


def test_reference_has_log_columns_and_predicted_labels() -> None:
    preds = pd.DataFrame(
        {"path": ["p0", "p2"], "label_index": [1, 0], "covid_probability": [0.9, 0.7]}
    )
    ref = build_reference(_images(), preds, ["Normal", "COVID"], cutoff=0.8)
    assert ref["label"].tolist() == ["COVID", "Normal"]
    assert ref["actual_label"].tolist() == ["COVID", "Normal"]
    assert set(IMAGE_COLUMNS) <= set(ref.columns) and len(ref) == 2


def test_unknown_test_image_is_an_error() -> None:
    preds = pd.DataFrame({"path": ["zz"], "label_index": [1], "covid_probability": [0.9]})
    with pytest.raises(ValueError, match="missing"):
        build_reference(_images(), preds, ["Normal", "COVID"], cutoff=0.5)
