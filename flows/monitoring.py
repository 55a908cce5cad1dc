"""The monitoring flow: prediction log window vs the packaged model's reference; one
alert per drift episode (a reminder per cool-down, one "recovered") through a Prefect
notification block, and a Prefect event when an episode starts or ends (the retraining
deployment's trigger listens for it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from cxr.core.config import load_settings
from cxr.core.runs import Run
from tasks.monitor import (
    alert_receiver_configured,
    decide_alert,
    drift_check,
    drift_event,
    message_body,
    retried_send_alert,
    store_episode,
)


@flow(name="cxr-monitoring", log_prints=True)
def monitoring_flow(
    window_minutes: int | None = None,
    min_predictions: int | None = None,
    model_tag: str | None = None,
    log_url: str | None = None,
    alert_block: str | None = None,
    config_file: str | None = None,
) -> dict[str, Any]:
    """Check the last ``window_minutes`` of served predictions for drift (unset
    parameters come from the configuration; a one-off webhook URL comes from the
    ``CXR_MONITOR__WEBHOOK_URL`` setting, never from a parameter)."""
    overrides = {
        "monitor.window_minutes": window_minutes,
        "monitor.min_predictions": min_predictions,
        "serve.model_tag": model_tag,
        "serve.prediction_log_url": log_url,
        "monitor.alert_block": alert_block,
    }
    settings = load_settings(
        config_file=Path(config_file) if config_file else None,
        overrides={key: value for key, value in overrides.items() if value is not None},
    )
    run = Run.create(settings.monitor.reports_dir)
    tag, summary = drift_check(settings, run)
    kind, previous, episode = decide_alert(tag, summary, settings)
    alert: dict[str, Any] | None = None
    if kind is not None:
        alert = drift_event(tag, kind, summary) if kind != "reminder" else {"kind": kind}
        if alert_receiver_configured(settings):
            body = message_body(tag, kind, summary, previous)
            alert["sent_to"] = retried_send_alert(settings)(body, settings)
    store_episode(tag, episode)
    return {"run_dir": str(run.dir), "model_tag": tag, "alert": alert, **summary.to_dict()}
