"""The episode rule over sequences of windows: one alert, reminders per cool-down,
one recovered; "not enough data" neither starts nor ends an episode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cxr.monitor.episodes import EpisodeState, next_alert, variable_name

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
SIX_HOURS = timedelta(hours=6)


def _messages(statuses: list[str], every: timedelta, cooldown: timedelta = SIX_HOURS) -> list:
    """The messages of windows ``every`` apart, from no stored state."""
    state, sent = EpisodeState(), []
    for i, status in enumerate(statuses):
        kind, state = next_alert(state, status, START + i * every, cooldown)
        sent.append(kind)
    return sent


def test_a_drift_episode_alerts_once_then_recovers_once() -> None:
    statuses = ["drift", "drift", "drift", "no_drift", "no_drift", "drift"]
    sent = _messages(statuses, timedelta(minutes=15))
    assert sent == ["drift", None, None, "recovered", None, "drift"]


def test_a_long_episode_reminds_once_per_cooldown() -> None:
    hourly = _messages(["drift"] * 14, timedelta(hours=1))
    assert hourly == ["drift"] + [None] * 5 + ["reminder"] + [None] * 5 + ["reminder", None]


def test_a_zero_cooldown_reminds_every_window() -> None:
    assert _messages(["drift"] * 3, timedelta(minutes=15), timedelta(0)) == [
        "drift", "reminder", "reminder",
    ]  # fmt: skip


def test_not_enough_data_neither_starts_nor_ends_an_episode() -> None:
    statuses = ["not_enough_data", "drift", "not_enough_data", "drift", "no_drift"]
    sent = _messages(statuses, timedelta(minutes=15))
    assert sent == [None, "drift", None, None, "recovered"]
    assert _messages(["no_drift", "not_enough_data", "no_drift"], timedelta(minutes=15)) == [
        None, None, None,
    ]  # fmt: skip


def test_the_state_keeps_the_episode_start_and_round_trips() -> None:
    _, first = next_alert(EpisodeState(), "drift", START, SIX_HOURS)
    _, later = next_alert(first, "drift", START + timedelta(hours=7), SIX_HOURS)
    assert later.started_at == START.isoformat()
    assert later.last_alert_at == (START + timedelta(hours=7)).isoformat()
    assert EpisodeState.from_dict(later.to_dict()) == later
    assert EpisodeState.from_dict(None) == EpisodeState()


def test_the_variable_is_named_after_the_model_not_its_version() -> None:
    assert variable_name("cxr-Hybrid.v2:abc123") == variable_name("cxr-hybrid.v2:latest")
    assert variable_name("cxr-hybrid.v2:abc") == "cxr-alert-episode-cxr-hybrid-v2"
