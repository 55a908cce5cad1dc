"""Drift episodes: one alert when drift starts, a reminder per cool-down, one "recovered".

The decision is :func:`next_alert`, a pure function of the stored state, this window's
status and the time. The state is stored in a Prefect Variable named after the served
model (:func:`variable_name`), Prefect's own key-value store: it lives in the Prefect
database, so it survives restarts of the monitor, of a worker and of the server, and a
terminal ``cxr monitor`` without ``PREFECT_API_URL`` keeps it too (its ephemeral server
uses the same persistent database in ``PREFECT_HOME``). A JSON file beside the reports
would be a second store that a worker on another machine would not see.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

AlertKind = Literal["drift", "reminder", "recovered"]


@dataclass(frozen=True)
class EpisodeState:
    """Whether a drift episode is open, since when and when it was last announced."""

    in_drift: bool = False
    started_at: str | None = None
    last_alert_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> EpisodeState:
        if not value:
            return cls()
        return cls(
            in_drift=bool(value.get("in_drift", False)),
            started_at=value.get("started_at"),
            last_alert_at=value.get("last_alert_at"),
        )


def next_alert(
    state: EpisodeState, status: str, moment: datetime, cooldown: timedelta
) -> tuple[AlertKind | None, EpisodeState]:
    """The message this window calls for (or ``None``) and the state to store after it.

    ``status`` is the monitor's outcome: ``"drift"``, ``"no_drift"`` or
    ``"not_enough_data"`` (which neither starts nor ends an episode)."""
    stamp = moment.isoformat()
    if status == "drift":
        if not state.in_drift:
            return "drift", EpisodeState(True, stamp, stamp)
        last = datetime.fromisoformat(state.last_alert_at) if state.last_alert_at else None
        if last is None or moment - last >= cooldown:
            return "reminder", EpisodeState(True, state.started_at, stamp)
        return None, state
    if status == "no_drift" and state.in_drift:
        return "recovered", EpisodeState()
    return None, state


def variable_name(model_tag: str) -> str:
    """The Prefect Variable holding the episode of a served model (its name, any version)."""
    name = model_tag.partition(":")[0].lower()
    return "cxr-alert-episode-" + re.sub(r"[^a-z0-9_-]", "-", name)


def load_state(model_tag: str) -> EpisodeState:
    """The stored episode of ``model_tag``'s model (none yet: not in drift)."""
    from prefect.variables import Variable

    value = Variable.get(variable_name(model_tag), default=None)
    return EpisodeState.from_dict(value if isinstance(value, dict) else None)


def save_state(model_tag: str, state: EpisodeState) -> None:
    """Store the episode (overwrites the previous one)."""
    from prefect.variables import Variable

    Variable.set(variable_name(model_tag), state.to_dict(), overwrite=True)
