"""Drift alerts through Prefect notification blocks.

A saved block keeps the receiver's URL as a secret: ``cxr alert-block create NAME --url
URL`` saves a Custom Webhook block whose URL is a ``{{url}}`` placeholder filled from the
block's ``secrets`` (a SecretDict), so a generic receiver gets the JSON body of
:func:`alert_body` (Slack-compatible ``text`` plus the summary). Any other saved
notification block (``slack-webhook/NAME``, ``microsoft-teams-webhook/NAME``, ...) gets the
``text`` through its own ``notify``. A plain URL (``cxr monitor --webhook-url``) is sent
the same way through an unsaved Custom Webhook block. Error messages never name the URL.
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock, NotificationBlock

from cxr.core.errors import AlertError, ConfigError
from cxr.monitor.episodes import AlertKind

DEFAULT_BLOCK_TYPE = "custom-webhook"

_HEADLINES: dict[str, str] = {
    "drift": ":warning: cxr drift detected for {tag}",
    "reminder": ":warning: cxr drift continues for {tag} (since {since})",
    "recovered": ":white_check_mark: cxr drift recovered for {tag}",
}


def alert_body(
    summary: dict[str, Any], model_tag: str, kind: AlertKind = "drift", since: str | None = None
) -> dict[str, Any]:
    """``text`` for Slack-compatible receivers, the full summary for generic ones."""
    drifted = ", ".join(summary.get("drifted_columns", [])) or "none"
    text = (
        f"{_HEADLINES[kind].format(tag=model_tag, since=since)}: drifted columns {drifted} "
        f"({summary['current_rows']} predictions, {summary['window_start']} to "
        f"{summary['window_end']})"
    )
    event = "cxr.drift.recovered" if kind == "recovered" else "cxr.drift.detected"
    return {
        "text": text, "kind": kind, "event": event, "model_tag": model_tag,
        "episode_started_at": since, **summary,
    }  # fmt: skip


def webhook_block(url: str, name: str = "cxr-alerts") -> CustomWebhookNotificationBlock:
    """A Custom Webhook block that keeps ``url`` in its secrets (save it to reuse it)."""
    return CustomWebhookNotificationBlock(name=name, url="{{url}}", secrets={"url": url})


def load_block(name: str) -> NotificationBlock:
    """The saved notification block ``name`` (``type-slug/name``; a bare name is a
    Custom Webhook block, as ``cxr alert-block create`` saves it)."""
    full = name if "/" in name else f"{DEFAULT_BLOCK_TYPE}/{name}"
    try:
        block = Block.load(full)
    except ValueError as error:
        raise ConfigError(
            f"no notification block {full!r} on the Prefect server; create it with "
            f"`cxr alert-block create {name.split('/')[-1]} --url URL`"
        ) from error
    if not isinstance(block, NotificationBlock):
        raise ConfigError(f"block {full!r} is a {type(block).__name__}, not a notification block")
    return block


def deliver(block: NotificationBlock, body: dict[str, Any]) -> None:
    """Send ``body`` through ``block``; raise :class:`AlertError` (without the URL) when
    the receiver is unreachable or does not answer 2xx."""
    if isinstance(block, CustomWebhookNotificationBlock):
        block = block.model_copy(update={"json_data": {**(block.json_data or {}), **body}})
    try:
        block.notify(body["text"], subject=f"cxr {body['kind']}: {body['model_tag']}")
    except Exception as error:  # noqa: BLE001 (every library error names the URL)
        status = getattr(getattr(error, "response", None), "status_code", None)
        reason = f"answered HTTP {status}" if status else f"failed ({type(error).__name__})"
        raise AlertError(
            f"the alert receiver of the {type(block).__name__} block {reason}; check the "
            "block's URL and the receiver"
        ) from None
