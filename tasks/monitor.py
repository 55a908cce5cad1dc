"""Monitoring tasks: the drift check, the episode decision and the alert delivery."""

from __future__ import annotations

from datetime import timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from cxr.core.config import Settings
from cxr.core.runs import Run
from cxr.monitor.alerts import alert_body, deliver, load_block, webhook_block
from cxr.monitor.check import check_drift
from cxr.monitor.drift import DriftSummary
from cxr.monitor.episodes import AlertKind, EpisodeState, load_state, next_alert, save_state
from cxr.serve.prediction_log import now
from tasks.artifacts import publish_markdown, publish_table

DRIFT_EVENT = "cxr.drift.detected"
RECOVERED_EVENT = "cxr.drift.recovered"


@task(name="check-drift", cache_policy=NO_CACHE)
def drift_check(settings: Settings, run: Run) -> tuple[str, DriftSummary]:
    """Evidently report of the window vs the reference, published as artifacts."""
    tag, summary = check_drift(settings, run)
    get_run_logger().info("%s: %s", tag, summary.headline())
    publish_markdown(
        "drift-summary",
        f"## {summary.headline()}\n\n- model: `{tag}`\n- window: {summary.window_start} to "
        f"{summary.window_end}\n- reference rows: {summary.reference_rows}\n"
        f"- report: `{summary.report_html}`\n"
        + (
            f"- in Evidently's UI (`cxr monitor-ui`): project `{tag.partition(':')[0]}`\n"
            if summary.report_html
            else ""
        ),
        f"monitoring run {run.run_id}",
    )
    if summary.columns:
        publish_table("drift-columns", summary.columns, f"monitoring run {run.run_id}: per column")
    return tag, summary


@task(name="decide-alert", cache_policy=NO_CACHE)
def decide_alert(
    tag: str, summary: DriftSummary, settings: Settings
) -> tuple[AlertKind | None, EpisodeState, EpisodeState]:
    """The message this window calls for, the stored episode and the one to store."""
    state = load_state(tag)
    cooldown = timedelta(hours=settings.monitor.alert_cooldown_hours)
    kind, new_state = next_alert(state, summary.status, now(), cooldown)
    get_run_logger().info("episode of %s: %s -> %s (message: %s)", tag, state, new_state, kind)
    return kind, state, new_state


@task(name="raise-drift-event", cache_policy=NO_CACHE)
def drift_event(tag: str, kind: AlertKind, summary: DriftSummary) -> dict:
    """A Prefect event when an episode starts (``cxr.drift.detected``) or ends
    (``cxr.drift.recovered``), about the resource ``cxr.model.<tag>``; reminders are
    messages only. Retraining on drift is the retraining deployment's trigger on this
    event (deploy/prefect.yaml, ``cxr deploy --retrain-on-drift``), not a call from here."""
    event = RECOVERED_EVENT if kind == "recovered" else DRIFT_EVENT
    emitted = emit_event(
        event=event,
        resource={"prefect.resource.id": f"cxr.model.{tag}", "prefect.resource.name": tag},
        payload=summary.to_dict(),
    )
    get_run_logger().info("emitted %s about cxr.model.%s", event, tag)
    return {"kind": kind, "event": event, "event_id": str(emitted.id) if emitted else None}


@task(name="send-alert", cache_policy=NO_CACHE)
def send_alert(body: dict, settings: Settings) -> str:
    """Deliver one message through the configured block (or the terminal's one-off URL);
    retried by Prefect (``monitor.alert_retries``, ``monitor.alert_retry_delay_s``)."""
    url = settings.monitor.webhook_url
    if url is not None:
        block, receiver = webhook_block(url.get_secret_value()), "the --webhook-url receiver"
    else:
        block, receiver = load_block(str(settings.monitor.alert_block)), "block "
        receiver += repr(settings.monitor.alert_block)
    deliver(block, body)
    get_run_logger().warning(
        "%s alert for %s sent to %s", body["kind"], body["model_tag"], receiver
    )
    return receiver


def alert_receiver_configured(settings: Settings) -> bool:
    return settings.monitor.webhook_url is not None or bool(settings.monitor.alert_block)


def retried_send_alert(settings: Settings):  # noqa: ANN201 (a Prefect Task)
    """:func:`send_alert` with the configured retries."""
    return send_alert.with_options(
        retries=settings.monitor.alert_retries,
        retry_delay_seconds=settings.monitor.alert_retry_delay_s,
    )


def message_body(tag: str, kind: AlertKind, summary: DriftSummary, previous: EpisodeState) -> dict:
    """The JSON body of this window's message."""
    since = previous.started_at if kind != "drift" else None
    return alert_body(summary.to_dict(), tag, kind, since)


@task(name="store-episode", cache_policy=NO_CACHE)
def store_episode(tag: str, state: EpisodeState) -> None:
    """Keep the episode for the next window (only once the message went out)."""
    save_state(tag, state)
