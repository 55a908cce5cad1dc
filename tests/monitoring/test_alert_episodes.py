"""Alerts per drift episode through a saved Prefect notification block, against a real
Prefect server, the real service's prediction log and real webhook receivers on loopback:
drift, drift, drift -> one alert; past the cool-down -> one reminder; clean -> one
"recovered"; a receiver that fails gets the retries and the CLI exits 7."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import TUBERCULOSIS, real_images, run_cli
from tests.monitoring.conftest import forget_episode
from tests.monitoring.test_monitoring import _serve_and_send

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


@pytest.fixture(scope="module")
def traffic(packaged_model: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Prediction logs of the real service: 40 Tuberculosis films (drift) and 40 unseen
    COVID/Normal films (clean)."""
    folder = tmp_path_factory.mktemp("traffic")
    images = {
        "drift": sorted(TUBERCULOSIS.glob("*.png"))[80:120],
        "clean": real_images("COVID", 20, offset=640) + real_images("Normal", 20, offset=640),
    }
    logs = {}
    for name, paths in images.items():
        logs[name] = f"sqlite:///{folder / name / 'predictions.db'}"
        _serve_and_send(packaged_model, logs[name], paths)
    return logs


def _monitor(api: str, model: str, log_url: str, *receiver: str):
    result = run_cli(
        "monitor", "--model", model, "--log-url", log_url, "--min-predictions", "30", *receiver,
        api_url=api,
    )  # fmt: skip
    return result


def _server_records(api: str) -> tuple[list, str]:
    """Every flow run of the server and all their logs and artifacts as one text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        ids = [run.id for run in runs]
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200)
        artifacts = client.read_artifacts()
    text = "\n".join(
        [run.model_dump_json() for run in runs]
        + [log.message for log in logs]
        + [artifact.model_dump_json() for artifact in artifacts]
    )
    return runs, text


def test_one_alert_per_episode_a_reminder_past_the_cooldown_and_one_recovered(
    prefect_api, make_receiver, packaged_model, traffic, tmp_path, monkeypatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.variables import Variable

    from cxr.monitor.episodes import variable_name

    monkeypatch.setenv("CXR_MONITOR__REPORTS_DIR", str(tmp_path / "reports"))
    hook, received = make_receiver(200)
    created = run_cli("alert-block", "create", "ward-alerts", "--url", hook, api_url=prefect_api)
    assert created.returncode == 0, created.stderr[-3000:]
    forget_episode(prefect_api, packaged_model)
    block = ("--alert-block", "ward-alerts")

    codes = [_monitor(prefect_api, packaged_model, traffic["drift"], *block) for _ in range(3)]
    assert [c.returncode for c in codes] == [5, 5, 5], codes[-1].stderr[-3000:]
    assert [body["kind"] for body in received] == ["drift"]
    first = received[0]
    assert "drift detected" in first["text"] and first["status"] == "drift"
    assert first["current_rows"] == 40 and first["event"] == "cxr.drift.detected"

    # seven hours later (the stored episode moved back): one reminder, default cool-down 6 h
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        name = variable_name(packaged_model)
        episode = Variable.get(name)
        earlier = datetime.fromisoformat(episode["last_alert_at"]) - timedelta(hours=7)
        Variable.set(name, {**episode, "last_alert_at": earlier.isoformat()}, overwrite=True)
    for _ in range(2):
        assert _monitor(prefect_api, packaged_model, traffic["drift"], *block).returncode == 5
    assert [body["kind"] for body in received] == ["drift", "reminder"]
    assert received[1]["episode_started_at"] == episode["started_at"]

    for _ in range(2):
        assert _monitor(prefect_api, packaged_model, traffic["clean"], *block).returncode == 0
    assert [body["kind"] for body in received] == ["drift", "reminder", "recovered"]
    assert "recovered" in received[2]["text"]

    runs, text = _server_records(prefect_api)
    assert len(runs) == 7 and all(run.state.is_completed() for run in runs)
    assert "ward-alerts" in text and hook not in text
    summaries = [p.read_text() for p in Path(tmp_path / "reports").glob("*/*.json")]
    assert summaries and not any(hook in s for s in summaries)


def test_a_failing_receiver_gets_the_retries_and_the_run_fails_with_exit_7(
    prefect_api, make_receiver, packaged_model, traffic, tmp_path, monkeypatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.variables import Variable

    from cxr.monitor.episodes import variable_name

    monkeypatch.setenv("CXR_MONITOR__REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("CXR_MONITOR__ALERT_RETRIES", "2")
    monkeypatch.setenv("CXR_MONITOR__ALERT_RETRY_DELAY_S", "0.2")
    hook, received = make_receiver(500)
    forget_episode(prefect_api, packaged_model)
    result = _monitor(prefect_api, packaged_model, traffic["drift"], "--webhook-url", hook)
    assert result.returncode == 7, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(received) == 3 and received[0]["kind"] == "drift"
    assert "answered HTTP 500" in result.stderr and hook not in result.stdout + result.stderr
    runs, text = _server_records(prefect_api)
    assert max(runs, key=lambda run: run.created).state.is_failed()
    assert hook not in text
    with temporary_settings({PREFECT_API_URL: prefect_api}):  # the next window retries
        assert Variable.get(variable_name(packaged_model)) is None
