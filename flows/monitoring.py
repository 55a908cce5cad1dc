"""The monitoring flow: prediction log window vs the packaged model's reference;
on drift a Prefect event, a webhook alert and optionally a retraining run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from cxr.core.config import load_settings
from cxr.core.runs import Run
from tasks.monitor import drift_alert, drift_check


@flow(name="cxr-monitoring", log_prints=True)
def monitoring_flow(
    window_minutes: int | None = None,
    min_predictions: int | None = None,
    model_tag: str | None = None,
    log_url: str | None = None,
    webhook_url: str | None = None,
    trigger_retraining: bool | None = None,
    config_file: str | None = None,
) -> dict[str, Any]:
    """Check the last ``window_minutes`` of served predictions for drift (unset
    parameters come from the configuration)."""
    overrides = {
        "monitor.window_minutes": window_minutes,
        "monitor.min_predictions": min_predictions,
        "serve.model_tag": model_tag,
        "serve.prediction_log_url": log_url,
        "monitor.webhook_url": webhook_url,
        "monitor.trigger_retraining": trigger_retraining,
    }
    settings = load_settings(
        config_file=Path(config_file) if config_file else None,
        overrides={key: value for key, value in overrides.items() if value is not None},
    )
    run = Run.create(settings.monitor.reports_dir)
    tag, summary = drift_check(settings, run)
    alert = drift_alert(tag, summary, settings) if summary.status == "drift" else None
    return {"run_dir": str(run.dir), "model_tag": tag, "alert": alert, **summary.to_dict()}
