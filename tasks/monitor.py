"""Monitoring tasks: the drift check and, on drift, the alerts."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.events import emit_event

from cxr.core.config import Settings
from cxr.core.runs import Run
from cxr.monitor.alerts import alert_body, send_webhook
from cxr.monitor.check import check_drift
from cxr.monitor.drift import DriftSummary
from tasks.artifacts import publish_markdown, publish_table

DRIFT_EVENT = "cxr.drift.detected"


@task(name="check-drift", cache_policy=NO_CACHE)
def drift_check(settings: Settings, run: Run) -> tuple[str, DriftSummary]:
    """Evidently report of the window vs the reference, published as artifacts."""
    tag, summary = check_drift(settings, run)
    get_run_logger().info("%s: %s", tag, summary.headline())
    publish_markdown(
        "drift-summary",
        f"## {summary.headline()}\n\n- model: `{tag}`\n- window: {summary.window_start} to "
        f"{summary.window_end}\n- reference rows: {summary.reference_rows}\n"
        f"- report: `{summary.report_html}`\n",
        f"monitoring run {run.run_id}",
    )
    if summary.columns:
        publish_table("drift-columns", summary.columns, f"monitoring run {run.run_id}: per column")
    return tag, summary


@task(name="raise-drift-alert", cache_policy=NO_CACHE)
def drift_alert(tag: str, summary: DriftSummary, settings: Settings) -> dict[str, object]:
    """Prefect event, webhook notification and (optionally) a retraining run."""
    logger = get_run_logger()
    payload = summary.to_dict()
    emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": f"cxr.model.{tag}", "prefect.resource.name": tag},
        payload=payload,
    )
    sent: dict[str, object] = {"event": DRIFT_EVENT}
    if settings.monitor.trigger_retraining:
        child = run_deployment(name=settings.monitor.retraining_deployment, timeout=0)
        sent["retraining_flow_run_id"] = str(child.id)
        logger.warning("drift: scheduled retraining run %s", child.id)
    if settings.monitor.webhook_url:
        sent["webhook_status"] = send_webhook(
            settings.monitor.webhook_url, alert_body(payload, tag)
        )
    logger.warning("drift alert raised for %s: %s", tag, sent)
    return sent
