"""Drift alerts to a webhook: Slack-compatible (``text``) and generic JSON in one body."""

from __future__ import annotations

from typing import Any

import httpx

from cxr.core.errors import AlertError


def alert_body(summary: dict[str, Any], model_tag: str) -> dict[str, Any]:
    """``text`` for Slack-compatible receivers, the full summary for generic ones."""
    drifted = ", ".join(summary.get("drifted_columns", [])) or "none"
    text = (
        f":warning: cxr drift detected for {model_tag}: {drifted} "
        f"({summary['current_rows']} predictions, {summary['window_start']} to "
        f"{summary['window_end']})"
    )
    return {"text": text, "event": "cxr.drift.detected", "model_tag": model_tag, **summary}


def send_webhook(url: str, body: dict[str, Any], timeout_s: float = 10.0) -> int:
    """POST the alert; raise :class:`AlertError` unless the receiver answers 2xx."""
    try:
        response = httpx.post(url, json=body, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise AlertError(f"webhook {url} unreachable: {error}") from error
    if not response.is_success:
        raise AlertError(f"webhook {url} answered {response.status_code}: {response.text[:200]}")
    return response.status_code
