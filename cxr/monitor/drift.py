"""Drift of served predictions and image statistics against the model's reference.

Evidently 0.7 runs one two-sample test per monitored column (Kolmogorov-Smirnov for numeric
columns, one-sided for the OOD score: only images further from the training population
than the reference's are drift, and the one-sided test needs about half the evidence;
for categorical ones its total-variation permutation test, which stays valid with
few images per label and with a label the reference never had, where chi-square against
the reference's shares calls drift on a single refused image) and writes the report. The
decision is Holm's weighted step-down correction over those p-values at a family-wise
level (``monitor.family_p_value``), of which the OOD score's test has its own share
(``monitor.ood_level_share``, half by default: the column made to see a new population)
and the other columns equal parts of the rest. The window drifts when at least one
column's adjusted p-value is below the level, so one strong shift is enough (the served
predictions alone, the OOD score alone, one image statistic alone), and a window of the
reference's own population is called drift with a chance of at most that level."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from cxr.core.config import MonitorConfig
from cxr.monitor.reference import monitored

os.environ.setdefault("DO_NOT_TRACK", "1")

Status = Literal["drift", "no_drift", "not_enough_data"]
NUMERIC_TEST, CATEGORICAL_TEST = "ks", "TVD"  # Evidently's stattests
OOD_TEST = "ks_greater"  # registered below with Evidently: one-sided KS for the OOD score
CORRECTION = "weighted holm"  # the OOD score has its own share of the level
PREDICTION_COLUMNS = ("covid_probability", "label")  # what the service answered
OOD_COLUMN = "ood_score"
SNAPSHOT_FILE = "drift_snapshot.json"  # the full report, Evidently's own format


def _ks_greater(
    reference: pd.Series, current: pd.Series, feature_type: Any, threshold: float
) -> tuple[float, bool]:
    """One-sided two-sample Kolmogorov-Smirnov test: do the current values tend to be
    larger than the reference's (the reference's distribution function above the
    current one somewhere)?"""
    from scipy.stats import ks_2samp

    p_value = float(ks_2samp(reference, current, alternative="greater").pvalue)
    return p_value, p_value <= threshold


def register_tests() -> None:
    """Register :data:`OOD_TEST` with Evidently (its documented way to add a stattest);
    idempotent."""
    from evidently.legacy.calculations.stattests.registry import (
        StatTest,
        register_stattest,
    )
    from evidently.legacy.core import ColumnType

    test = StatTest(
        name=OOD_TEST,
        display_name="K-S (one-sided, greater) p_value",
        allowed_feature_types=[ColumnType.Numerical],
        default_threshold=0.05,
    )
    register_stattest(test, _ks_greater)


def _method(column: str) -> str:
    return OOD_TEST if column == OOD_COLUMN else NUMERIC_TEST


def reason_of(column: str) -> str:
    """What a drifted column says: the served predictions moved, the images look less like
    the training population (OOD score), or the images themselves changed."""
    if column in PREDICTION_COLUMNS:
        return "predictions"
    return "out-of-distribution score" if column == OOD_COLUMN else "image statistics"


def holm(
    p_values: list[float | None], level: float, weights: list[float] | None = None
) -> tuple[list[float | None], list[bool]]:
    """Holm's step-down adjusted p-values and rejections at family-wise ``level``; a
    ``None`` p-value (a column that could not be tested) is left out of the family.
    ``weights`` (positive; equal by default) make it the weighted Holm procedure (Holm
    1979): a column of weight ``w`` is first tested at ``w / sum(weights) * level``, and
    each rejection passes its weight on to the columns left; the family-wise level holds
    whatever the weights."""
    weights = [1.0] * len(p_values) if weights is None else list(weights)
    tested = sorted((p / weights[i], i) for i, p in enumerate(p_values) if p is not None)
    left = sum(weights[i] for _, i in tested)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for ratio, i in tested:
        running = max(running, min(1.0, ratio * left))
        adjusted[i] = running
        left -= weights[i]
    return adjusted, [a is not None and a < level for a in adjusted]


def column_weights(columns: list[str], ood_share: float) -> list[float]:
    """The weighted Holm weights of ``columns``: the OOD score's test gets ``ood_share`` of
    the level, the other columns equal parts of the rest (all equal without it)."""
    if OOD_COLUMN not in columns or len(columns) == 1:
        return [1.0] * len(columns)
    rest = (1.0 - ood_share) / (len(columns) - 1)
    return [ood_share if c == OOD_COLUMN else rest for c in columns]


@dataclass
class Decision:
    """The verdict on one window's per-column tests."""

    status: Status
    columns: list[dict[str, Any]]  # each with its adjusted p-value, verdict and reason
    drifted_columns: list[str]
    reasons: list[str]


def decide(columns: list[dict[str, Any]], config: MonitorConfig) -> Decision:
    """Weighted Holm over the columns' p-values at ``config.family_p_value`` (the OOD
    score's share of it: ``config.ood_level_share``): drift when any column survives the
    correction; each drifted column is named with its reason."""
    tested = [c["column"] for c in columns if c["p_value"] is not None]
    share = dict(zip(tested, column_weights(tested, config.ood_level_share), strict=True))
    weights = [share.get(c["column"], 1.0) for c in columns]
    adjusted, rejected = holm([c["p_value"] for c in columns], config.family_p_value, weights)
    annotated = [
        {**c, "adjusted_p_value": a, "drifted": r, "reason": reason_of(c["column"])}
        for c, a, r in zip(columns, adjusted, rejected, strict=True)
    ]
    drifted = [c for c in annotated if c["drifted"]]
    by_reason: dict[str, list[str]] = {}
    for c in drifted:
        by_reason.setdefault(c["reason"], []).append(
            f"{c['column']} (p={c['p_value']:.2g}, Holm {c['adjusted_p_value']:.2g})"
        )
    return Decision(
        status="drift" if drifted else "no_drift",
        columns=annotated,
        drifted_columns=[c["column"] for c in drifted],
        reasons=[f"{reason}: {', '.join(found)}" for reason, found in by_reason.items()],
    )


@dataclass
class DriftSummary:
    """What the monitor decided, for artifacts, events and webhooks."""

    status: Status
    window_start: str
    window_end: str
    current_rows: int
    reference_rows: int
    min_rows: int
    family_p_value: float | None = None
    correction: str = CORRECTION
    drift_share: float | None = None  # share of columns drifted after the correction
    drifted_columns: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
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
        why = "; ".join(self.reasons) or "none"
        return (
            f"{self.status.replace('_', ' ')}: {len(self.drifted_columns)} of "
            f"{len(self.columns)} columns drifted after {self.correction.title()} correction "
            f"at {self.family_p_value} ({why}) over {self.current_rows} predictions"
        )


def _columns(config: MonitorConfig) -> list[str]:
    return [*config.numeric_columns, *config.categorical_columns]


def _report(reference: pd.DataFrame, current: pd.DataFrame, config: MonitorConfig) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = _columns(config)
    definition = DataDefinition(
        numerical_columns=list(config.numeric_columns),
        categorical_columns=list(config.categorical_columns),
    )
    weights = column_weights(columns, config.ood_level_share)
    unit = config.family_p_value / sum(weights)  # weighted Bonferroni: the report's marks
    levels = {c: unit * w for c, w in zip(columns, weights, strict=True)}
    register_tests()
    preset = DataDriftPreset(
        columns=columns,
        num_method=NUMERIC_TEST,
        per_column_method={OOD_COLUMN: OOD_TEST} if OOD_COLUMN in config.numeric_columns else None,
        cat_method=CATEGORICAL_TEST,
        per_column_threshold=levels,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant columns, tiny windows
        return Report([preset], include_tests=True).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
        )


def _p_value(score: float) -> float | None:
    return None if math.isnan(score) else float(score)


def _snapshot_columns(snapshot: Any) -> list[dict[str, Any]]:
    """Each monitored column's test and p-value as Evidently's report computed them."""
    columns = []
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            test, score = config["method"], float(metric["value"])
            columns.append({"column": config["column"], "test": test, "p_value": _p_value(score)})
    return columns


def column_p_values(
    reference: pd.DataFrame, current: pd.DataFrame, config: MonitorConfig
) -> list[dict[str, Any]]:
    """The same per-column p-values as the report, from Evidently's stattests alone
    (no report: what a benchmark replaying thousands of windows calls)."""
    from evidently.legacy.calculations.stattests import get_stattest

    columns = []
    register_tests()
    kinds = [("num", c, _method(c)) for c in config.numeric_columns]
    kinds += [("cat", c, CATEGORICAL_TEST) for c in config.categorical_columns]
    for kind, column, method in kinds:
        ref, cur = (frame[column].replace([math.inf, -math.inf], math.nan).dropna()
                    for frame in (reference, current))  # fmt: skip
        test = get_stattest(ref, cur, kind, method)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            score = float(test(ref, cur, kind, None).drift_score)
        columns.append({"column": column, "test": test.display_name, "p_value": _p_value(score)})
    return columns


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
        family_p_value=config.family_p_value,
    )
    if len(current) < config.min_predictions:
        return summary
    config = monitored(config, reference, current)  # e.g. no OOD score: not compared
    snapshot = _report(reference, current, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    html, json_file = out_dir / "drift_report.html", out_dir / "drift_report.json"
    snapshot.save_html(str(html))  # Evidently writes nothing when given a Path
    snapshot.save_json(str(json_file))
    (out_dir / SNAPSHOT_FILE).write_text(snapshot.dumps())  # for the workspace
    decision = decide(_snapshot_columns(snapshot), config)
    summary.status, summary.columns = decision.status, decision.columns
    summary.drifted_columns, summary.reasons = decision.drifted_columns, decision.reasons
    summary.drift_share = len(decision.drifted_columns) / max(1, len(decision.columns))
    summary.report_html, summary.report_json = str(html), str(json_file)
    return summary
