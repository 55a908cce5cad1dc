"""The Evidently workspace of the monitoring passes: one project per served model name,
each pass's drift report as a run (Evidently's snapshot, with the window's own figures),
and a dashboard of drift over time that ``cxr monitor-ui`` (Evidently's UI) shows.

A run's timestamp is the end of its window (UTC, naive as Evidently stores it); its tags
are the verdict (``drift``, ``no_drift``) and its metadata the exact model tag, the
monitoring run and the decision (Holm-corrected share of drifted columns)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from cxr.core.ood import OUT_OF_DISTRIBUTION
from cxr.monitor.drift import OOD_COLUMN, SNAPSHOT_FILE, DriftSummary

os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's telemetry, the UI's included

TAB = "Drift over time"


def project_name(model_tag: str) -> str:
    """The project of a model: its name, shared by all its versions."""
    return model_tag.partition(":")[0]


def _share(category: str) -> dict[str, str]:
    """Labels of a ``CategoryCount`` series: the share of ``category`` among the answers."""
    return {"column": "label", "categories": str([category]), "value_type": "share"}


def dashboard_panels(positive_class: str, ood: bool) -> list[Any]:
    """The drift-over-time panels: last window's figures, then their history."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel

    drifted = PanelMetric(
        legend="share of columns drifted",
        metric="DriftedColumnsCount",
        metric_labels={"value_type": "share"},
    )
    rows = PanelMetric(legend="predictions", metric="RowCount")
    positive = PanelMetric(
        legend=f"{positive_class} share", metric="CategoryCount",
        metric_labels=_share(positive_class),
    )  # fmt: skip
    panels = [
        counter_panel("Drifted columns, last window", [drifted], size="half"),
        counter_panel("Predictions, last window", [rows], size="half"),
        line_plot_panel(
            "Share of drifted columns",
            [drifted],
            "columns the report marks drifted (per-column tests), one point per window",
        ),
        line_plot_panel(
            f"Prediction share: {positive_class}",
            [positive],
            f"share of the window's answers that were {positive_class}",
            size="half",
        ),
        bar_plot_panel("Window size", [rows], "predictions in each window", size="half"),
        line_plot_panel(
            "p-value per column",
            [PanelMetric(legend="{{column}}", metric="ValueDrift")],
            "each monitored column's two-sample test against the reference",
        ),
    ]
    if ood:
        refused = PanelMetric(
            legend="out-of-distribution share", metric="CategoryCount",
            metric_labels=_share(OUT_OF_DISTRIBUTION),
        )  # fmt: skip
        panels.append(
            line_plot_panel(
                "Out-of-distribution share",
                [refused],
                "share of the window's images the OOD detector refused",
            )
        )
    return panels


def open_project(workspace: Any, name: str, positive_class: str, ood: bool) -> Any:
    """The model's project, created on first use; panels it lacks are added (the OOD
    panel once a version with a detector is monitored)."""
    found = workspace.search_project(name)
    project = found[0] if found else workspace.create_project(
        name, f"Drift of the served model {name}: one run per monitoring window"
    )  # fmt: skip
    present = {panel.title for panel in workspace.get_dashboard(project.id).panels}
    for panel in dashboard_panels(positive_class, ood):
        if panel.title not in present:
            project.dashboard.add_panel(panel, tab=TAB)
    return project


def window_snapshot(current: pd.DataFrame, positive_class: str) -> Any:
    """Evidently's figures of the window itself: its size, the share of each answer."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import CategoryCount, RowCount

    definition = DataDefinition(categorical_columns=["label"])
    report = Report(
        [
            RowCount(),
            CategoryCount(column="label", category=positive_class),
            CategoryCount(column="label", category=OUT_OF_DISTRIBUTION),
        ]
    )
    return report.run(Dataset.from_pandas(current[["label"]], data_definition=definition), None)


def added_at(run_id: str) -> datetime | None:
    """When a run was added: Evidently's run ids are UUIDv7, whose first 48 bits are the
    creation time in Unix milliseconds (RFC 9562; ahead of the clock by up to 1 ms per id
    made in a burst, nothing next to days); None for another kind of id."""
    value = uuid.UUID(str(run_id))
    if value.version != 7:
        return None
    return datetime.fromtimestamp((value.int >> 80) / 1000, UTC)


def prune(workspace: Any, project_id: Any, keep_days: float | None, at: datetime) -> int:
    """Delete the project's runs added more than ``keep_days`` before ``at`` (Evidently's
    own ``delete_run``); the number deleted."""
    if keep_days is None:
        return 0
    cutoff = at - timedelta(days=keep_days)
    old = [
        run for run in workspace.list_runs(project_id)
        if (added := added_at(run)) is not None and added < cutoff
    ]  # fmt: skip
    for run in old:
        workspace.delete_run(project_id, run)
    return len(old)


def add_pass(
    workspace_dir: Path,
    run_dir: Path,
    run_id: str,
    model_tag: str,
    summary: DriftSummary,
    current: pd.DataFrame,
    positive_class: str,
    keep_days: float | None = None,
) -> Any | None:
    """Add this pass's drift report (``run_dir/drift_snapshot.json``) with the window's
    figures to the model's project, and drop its runs older than ``keep_days``; returns
    Evidently's reference to the run, or None when the window was too small for a report."""
    from evidently.core.report import Snapshot
    from evidently.ui.workspace import Workspace

    if summary.report_json is None:
        return None
    model = Snapshot.load(run_dir / SNAPSHOT_FILE).to_snapshot_model()
    window = window_snapshot(current, positive_class).to_snapshot_model()
    model.metric_results.update(window.metric_results)
    model.top_level_metrics += window.top_level_metrics
    model.widgets = model.widgets + window.widgets
    end = datetime.fromisoformat(summary.window_end).astimezone(UTC).replace(tzinfo=None)
    model.timestamp = end
    model.name = f"{model_tag} | window to {end:%Y-%m-%d %H:%M} UTC | {summary.status}"
    model.tags = [summary.status]
    model.metadata = {
        "model_tag": model_tag,
        "monitoring_run": run_id,
        "status": summary.status,
        "drift_share_holm": f"{summary.drift_share:.3f}",
        "window_start": summary.window_start,
        "window_end": summary.window_end,
    }
    workspace_dir.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(str(workspace_dir))
    ood = any(column["column"] == OOD_COLUMN for column in summary.columns)
    project = open_project(workspace, project_name(model_tag), positive_class, ood)
    added = workspace.add_run(project.id, Snapshot.load_model(model))
    prune(workspace, project.id, keep_days, datetime.now(UTC))
    return added
