"""Monitoring end to end: a real Prefect server process, the real service, a webhook
receiver on loopback; held-out radiographs raise no alert, Tuberculosis images do.
Fixtures (the Prefect server, the receivers) are in this folder's conftest.py."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cxr.serve.server_process import start_server
from tests.conftest import REPO, TUBERCULOSIS, real_images, run_cli

pytestmark = pytest.mark.slow


def _serve_and_send(packaged_model: str, log_url: str, images: list[Path]) -> None:
    running = start_server(
        {"CXR_SERVE__MODEL_TAG": packaged_model, "CXR_SERVE__PREDICTION_LOG_URL": log_url}
    )
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            for path in images:
                answer = client.post("/predict", files={"image": (path.name, path.read_bytes())})
                assert answer.status_code == 200, answer.text
    finally:
        running.stop()


def _drift_events(api_url: str, since: datetime) -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        occurred = EventOccurredFilter(since=since, until=datetime.now(UTC) + timedelta(minutes=1))
        flt = EventFilter(occurred=occurred, event=EventNameFilter(name=["cxr.drift.detected"]))
        return client.read_events(filter=flt, limit=10).events


@pytest.mark.real_data
def test_held_out_images_pass_and_tuberculosis_raises_an_alert(
    prefect_api, make_receiver, packaged_model, tmp_path, monkeypatch
) -> None:
    hook, received = make_receiver(200)
    started = datetime.now(UTC)
    held_out = real_images("COVID", 20, offset=600) + real_images("Normal", 20, offset=600)
    tuberculosis = sorted(TUBERCULOSIS.glob("*.png"))[:40]
    reports = tmp_path / "reports"
    common = ["--model", packaged_model, "--webhook-url", hook, "--min-predictions", "30"]
    monkeypatch.setenv("CXR_MONITOR__REPORTS_DIR", str(reports))
    outcomes = {}
    for name, images in (("held_out", held_out), ("tuberculosis", tuberculosis)):
        log_url = f"sqlite:///{tmp_path / name / 'predictions.db'}"
        _serve_and_send(packaged_model, log_url, images)
        outcomes[name] = run_cli("monitor", *common, "--log-url", log_url, api_url=prefect_api)

    quiet, alarmed = outcomes["held_out"], outcomes["tuberculosis"]
    assert quiet.returncode == 0, quiet.stdout[-3000:] + quiet.stderr[-3000:]
    assert alarmed.returncode == 5, alarmed.stdout[-3000:] + alarmed.stderr[-3000:]
    assert len(received) == 1 and "drift detected" in received[0]["text"]
    assert received[0]["status"] == "drift" and received[0]["current_rows"] == 40
    summaries = [json.loads(p.read_text()) for p in sorted(reports.glob("*/summary.json"))]
    assert [s["status"] for s in summaries] == ["no_drift", "drift"]
    assert all(Path(s["report_html"]).is_file() for s in summaries)
    deadline = time.time() + 30
    while not (events := _drift_events(prefect_api, started)) and time.time() < deadline:
        time.sleep(1)
    assert len(events) == 1 and events[0].payload["status"] == "drift"


@pytest.mark.real_data
def test_too_few_predictions_is_reported_as_such(prefect_api, packaged_model, tmp_path) -> None:
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    _serve_and_send(packaged_model, log_url, real_images("Normal", 3, offset=700))
    result = run_cli(
        "monitor", "--model", packaged_model, "--log-url", log_url, api_url=prefect_api
    )
    assert result.returncode == 6, result.stderr[-3000:]
    assert '"status": "not_enough_data"' in result.stdout


@pytest.mark.real_data
def test_a_missing_prediction_log_is_a_clear_error(prefect_api, packaged_model, tmp_path) -> None:
    log_url = f"sqlite:///{tmp_path / 'no-such-folder' / 'predictions.db'}"
    result = run_cli(
        "monitor", "--model", packaged_model, "--log-url", log_url, api_url=prefect_api
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "prediction log not found" in result.stderr
    assert not (tmp_path / "no-such-folder").exists()


def test_deployments_are_registered_with_schedules(prefect_api, tmp_path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    secret_url = "http://127.0.0.1:9/secret-hook-token"
    created = run_cli(
        "alert-block", "create", "team-alerts", "--url", secret_url, api_url=prefect_api
    )
    assert created.returncode == 0, created.stderr[-3000:]
    result = run_cli(
        "deploy", "--data-dir", str(tmp_path), "--alert-block", "team-alerts",
        api_url=prefect_api,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "secret-hook-token" not in result.stdout + result.stderr
    with temporary_settings({PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
        found = {
            f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()
        }
    retrain = found["cxr-training/scheduled-retraining"]
    monitor = found["cxr-monitoring/drift-monitoring"]
    assert [s.schedule.cron for s in retrain.schedules] == ["0 3 * * 0"]
    assert [s.schedule.cron for s in monitor.schedules] == ["*/15 * * * *"]
    assert retrain.parameters["data_dir"] == str(tmp_path.resolve())
    assert retrain.parameters["profile"] == "paper"
    assert monitor.parameters["alert_block"] == "team-alerts"
    assert "webhook_url" not in monitor.parameters
    assert "secret-hook-token" not in retrain.model_dump_json() + monitor.model_dump_json()
    assert "secret-hook-token" not in (REPO / "deploy" / "prefect.yaml").read_text()
    assert monitor.parameters["window_minutes"] == 60


def test_retraining_on_drift_is_the_deployment_trigger_with_a_concurrency_limit(
    prefect_api, tmp_path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def automations() -> list:
        with (
            temporary_settings({PREFECT_API_URL: prefect_api}),
            get_client(sync_client=True) as client,
        ):
            (retrain,) = [d for d in client.read_deployments() if d.name == "scheduled-retraining"]
            owned = client.read_resource_related_automations(f"prefect.deployment.{retrain.id}")
        return retrain, owned

    config = tmp_path / "settings.yaml"
    config.write_text("packaging:\n  model_name: ward-classifier\n")
    deploy = ["deploy", "--data-dir", str(tmp_path), "--config", str(config)]
    assert run_cli(*deploy, api_url=prefect_api).returncode == 0
    retrain, (trigger,) = automations()
    assert not trigger.enabled  # off unless asked for
    assert retrain.global_concurrency_limit.limit == 1
    assert retrain.concurrency_options.collision_strategy == "CANCEL_NEW"
    assert retrain.parameters["config_file"] == str(config.resolve())

    result = run_cli(*deploy, "--retrain-on-drift", api_url=prefect_api)
    assert result.returncode == 0 and "retraining on drift: on" in result.stdout, result.stderr
    retrain, (trigger,) = automations()  # registered again: replaced, not added
    assert trigger.enabled and trigger.trigger.expect == {"cxr.drift.detected"}
    assert trigger.trigger.match.model_dump() == {
        "prefect.resource.id": "cxr.model.ward-classifier:*"
    }
    (action,) = trigger.actions
    assert action.type == "run-deployment" and action.deployment_id == retrain.id
    assert action.parameters is None  # the deployment's own: its data folder as it is then

    removed = run_cli("monitor", "--trigger-retraining", api_url=prefect_api)
    assert removed.returncode == 2 and "cxr deploy --retrain-on-drift" in removed.stderr
    config.write_text("monitor:\n  trigger_retraining: true\n")
    refused = run_cli(*deploy, api_url=prefect_api)
    assert refused.returncode == 2 and "monitor.trigger_retraining was replaced" in refused.stderr
