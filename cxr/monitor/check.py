"""One monitoring pass: the prediction log's window against the model's reference."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from cxr.core.config import Settings
from cxr.core.errors import DataInputError
from cxr.core.model_store import get_stored
from cxr.core.runs import Run
from cxr.monitor.drift import DriftSummary, detect_drift
from cxr.monitor.reference import REFERENCE_FILE, monitored
from cxr.monitor.workspace import add_pass
from cxr.serve.prediction_log import create_log_engine, now, read_predictions

logger = logging.getLogger(__name__)


def load_reference(model_tag: str) -> tuple[str, pd.DataFrame]:
    """The resolved tag and the reference saved beside the packaged model."""
    stored = get_stored(model_tag)
    path = Path(stored.path_of(REFERENCE_FILE))
    if not path.is_file():
        raise DataInputError(f"model {stored.tag} has no {REFERENCE_FILE}; re-package it")
    return str(stored.tag), pd.read_csv(path)


def window_predictions(
    log_url: str, window_minutes: int, end: datetime | None = None
) -> tuple[pd.DataFrame, tuple[datetime, datetime]]:
    """Predictions logged in the last ``window_minutes`` before ``end``."""
    if log_url.startswith("sqlite:///"):
        path = Path(log_url.removeprefix("sqlite:///")).expanduser()
        if not path.is_file():
            raise DataInputError(f"prediction log not found: {path.resolve()}")
    end = end or now()
    start = end - timedelta(minutes=window_minutes)
    engine = create_log_engine(log_url)
    try:
        return read_predictions(engine, start, end), (start, end)
    finally:
        engine.dispose()


def served_tag(configured: str, window: pd.DataFrame) -> str:
    """The model to monitor: an explicit version as configured; for ``name:latest`` and
    ``name:production`` the version the service logged last (a retraining or a promotion
    does not change a running server until it restarts)."""
    name, _, version = configured.partition(":")
    if version not in ("", "latest", "production"):
        return configured
    logged = window.loc[window["model_tag"].str.split(":").str[0] == name, "model_tag"]
    return str(logged.iloc[-1]) if len(logged) else configured


def check_drift(settings: Settings, run: Run) -> tuple[str, DriftSummary]:
    """Compare the window with the reference; reports and ``summary.json`` go to ``run``,
    the report also to the Evidently workspace (``monitor.workspace_dir``)."""
    window, (start, end) = window_predictions(
        settings.serve.prediction_log_url, settings.monitor.window_minutes
    )
    tag, reference = load_reference(served_tag(settings.serve.model_tag, window))
    current = window.loc[window["model_tag"] == tag].reset_index(drop=True)
    current.to_csv(run.path("window.csv"), index=False)
    config = monitored(settings.monitor, reference, current)  # no OOD score: not compared
    summary = detect_drift(
        reference, current, config, (start.isoformat(), end.isoformat()), run.dir
    )
    try:  # the dashboard must not cost the alert: a full or read-only disk is logged
        added = add_pass(
            settings.monitor.workspace_dir, run.dir, run.run_id, tag, summary, current,
            settings.data.classes[1], settings.monitor.workspace_retention_days,
        )  # fmt: skip
        workspace_run = None if added is None else str(added.id)  # its id in Evidently's UI
    except OSError as error:
        logger.error("the drift report was not added to the Evidently workspace %s: %s",
                     settings.monitor.workspace_dir, error)  # fmt: skip
        workspace_run = None
    run.write_json(
        "summary.json", {"model_tag": tag, **summary.to_dict(), "workspace_run": workspace_run}
    )
    return tag, summary
