"""One monitoring pass: the prediction log's window against the model's reference."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from cxr.config import Settings
from cxr.drift import DriftSummary, detect_drift
from cxr.model_store import get_stored
from cxr.prediction_log import create_log_engine, now, read_predictions
from cxr.reference import REFERENCE_FILE
from cxr.runs import Run


def load_reference(model_tag: str) -> tuple[str, pd.DataFrame]:
    """The resolved tag and the reference saved beside the packaged model."""
    stored = get_stored(model_tag)
    path = Path(stored.path_of(REFERENCE_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"model {stored.tag} has no {REFERENCE_FILE}; re-package it")
    return str(stored.tag), pd.read_csv(path)


def window_predictions(
    log_url: str, model_tag: str, window_minutes: int, end: datetime | None = None
) -> tuple[pd.DataFrame, tuple[datetime, datetime]]:
    """Predictions of ``model_tag`` logged in the last ``window_minutes`` before ``end``."""
    end = end or now()
    start = end - timedelta(minutes=window_minutes)
    engine = create_log_engine(log_url)
    try:
        current = read_predictions(engine, start, end)
    finally:
        engine.dispose()
    return current.loc[current["model_tag"] == model_tag].reset_index(drop=True), (start, end)


def check_drift(settings: Settings, run: Run) -> tuple[str, DriftSummary]:
    """Compare the window with the reference; reports and ``summary.json`` go to ``run``."""
    tag, reference = load_reference(settings.serve.model_tag)
    current, (start, end) = window_predictions(
        settings.serve.prediction_log_url, tag, settings.monitor.window_minutes
    )
    current.to_csv(run.path("window.csv"), index=False)
    summary = detect_drift(
        reference, current, settings.monitor, (start.isoformat(), end.isoformat()), run.dir
    )
    run.write_json("summary.json", {"model_tag": tag, **summary.to_dict()})
    return tag, summary
