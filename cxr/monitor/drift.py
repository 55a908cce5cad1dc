"""Drift of served predictions and image statistics against the model's reference,
with Evidently 0.7 (KS for numeric columns, chi-square for categorical ones)."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from cxr.core.config import MonitorConfig

os.environ.setdefault("DO_NOT_TRACK", "1")

Status = Literal["drift", "no_drift", "not_enough_data"]


@dataclass
class DriftSummary:
    """What the monitor decided, for artifacts, events and webhooks."""

    status: Status
    window_start: str
    window_end: str
    current_rows: int
    reference_rows: int
    min_rows: int
    drift_share: float | None = None
    drift_share_threshold: float | None = None
    drifted_columns: list[str] = field(default_factory=list)
    columns: list[dict[str, Any]] = field(default_factory=list)
    report_html: str | None = None
    report_json: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> str:
        if self.status == "not_enough_data":
            return (
                f"not enough data: {self.current_rows} predictions in the window "
                f"(need {self.min_rows})"
            )
        drifted = ", ".join(self.drifted_columns) or "none"
        return (
            f"{self.status.replace('_', ' ')}: {len(self.drifted_columns)} of "
            f"{len(self.columns)} columns drifted ({drifted}) over {self.current_rows} predictions"
        )


def _report(reference: pd.DataFrame, current: pd.DataFrame, config: MonitorConfig) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [*config.numeric_columns, *config.categorical_columns]
    definition = DataDefinition(
        numerical_columns=list(config.numeric_columns),
        categorical_columns=list(config.categorical_columns),
    )
    preset = DataDriftPreset(
        columns=columns,
        num_method="ks",
        cat_method="chisquare",
        num_threshold=config.column_p_value,
        cat_threshold=config.column_p_value,
        drift_share=config.drift_share,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant columns, tiny windows
        return Report([preset], include_tests=True).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
        )


def _column_results(snapshot: Any) -> tuple[list[dict[str, Any]], float]:
    data = snapshot.dict()
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL" for t in data["tests"]}
    columns, share = [], 0.0
    for metric in data["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            score = float(metric["value"])
            columns.append(
                {
                    "column": config["column"],
                    "test": config["method"],
                    "p_value": None if math.isnan(score) else score,
                    "threshold": config["threshold"],
                    "drifted": failed.get(metric["id"], False),
                }
            )
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    return columns, share


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: MonitorConfig,
    window: tuple[str, str],
    out_dir: Path,
) -> DriftSummary:
    """Compare the window with the reference; save the Evidently HTML and JSON."""
    summary = DriftSummary(
        status="not_enough_data",
        window_start=window[0],
        window_end=window[1],
        current_rows=len(current),
        reference_rows=len(reference),
        min_rows=config.min_predictions,
    )
    if len(current) < config.min_predictions:
        return summary
    snapshot = _report(reference, current, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    html, json_file = out_dir / "drift_report.html", out_dir / "drift_report.json"
    snapshot.save_html(str(html))  # Evidently writes nothing when given a Path
    snapshot.save_json(str(json_file))
    columns, share = _column_results(snapshot)
    summary.columns = columns
    summary.drift_share = share
    summary.drift_share_threshold = config.drift_share
    summary.drifted_columns = [c["column"] for c in columns if c["drifted"]]
    predictions_moved = any(
        c["column"] == "covid_probability"
        and c["p_value"] is not None
        and c["p_value"] < config.prediction_p_value
        for c in columns
    )
    summary.status = "drift" if share >= config.drift_share or predictions_moved else "no_drift"
    summary.report_html, summary.report_json = str(html), str(json_file)
    return summary
