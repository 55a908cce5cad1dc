"""The real BentoML server writing its prediction log to a real PostgreSQL server (the
session's throwaway cluster, tests/pg.py): concurrent clients lose no row, a kill -9 keeps
every committed one (as tests/serving/test_service.py checks on SQLite), and ``cxr
monitor`` reads a window of that log."""

from __future__ import annotations

import json

import httpx
import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext

from cxr.serve.prediction_log import create_log_engine, read_predictions
from cxr.serve.server_process import start_server
from tests.conftest import last_json, real_images, run_cli
from tests.serving.log_under_load import check_no_row_lost_then_kill

pytestmark = pytest.mark.slow


def _predict(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post("/predict", files={"image": ("x.png", data, "application/octet-stream")})


def _revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    return revision


@pytest.fixture(scope="module")
def pg_server(packaged_model: str, postgres_server):
    """``bentoml serve`` on a free loopback port with its log in a new PostgreSQL
    database (empty: the service's workers create the tables by migrating it)."""
    log_url = postgres_server.create_database()
    running = start_server(
        {"CXR_SERVE__MODEL_TAG": packaged_model, "CXR_SERVE__PREDICTION_LOG_URL": log_url}
    )
    client = httpx.Client(base_url=running.url, timeout=60)
    yield client, log_url, running
    client.close()
    running.stop()


@pytest.mark.real_data
def test_concurrent_clients_lose_no_row_and_kill_keeps_committed_rows_on_postgres(
    pg_server,
) -> None:
    client, log_url, running = pg_server
    assert _revision(log_url) == "0002"  # migrated to head by the service on start
    check_no_row_lost_then_kill(client, log_url, running)
    assert read_predictions(create_log_engine(log_url))["request_id"].is_unique


@pytest.mark.real_data
def test_cxr_monitor_reads_a_postgresql_log(
    packaged_model: str, postgres_server, prefect_server: str, tmp_path, monkeypatch
) -> None:
    """40 held-out radiographs served into a PostgreSQL log (its server's time zone is
    not UTC) are the monitoring window, as they are from SQLite in test_monitoring.py."""
    log_url = postgres_server.create_database()
    running = start_server(
        {"CXR_SERVE__MODEL_TAG": packaged_model, "CXR_SERVE__PREDICTION_LOG_URL": log_url}
    )
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            for path in real_images("COVID", 20, offset=600) + real_images("Normal", 20, 600):
                assert _predict(client, path.read_bytes()).status_code == 200
    finally:
        running.stop()
    reports = tmp_path / "reports"
    monkeypatch.setenv("CXR_MONITOR__REPORTS_DIR", str(reports))
    monkeypatch.setenv("CXR_SERVE__PREDICTION_LOG_URL", log_url)  # as a deployment sets it
    result = run_cli(
        "monitor", "--model", packaged_model, "--min-predictions", "30", api_url=prefect_server
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    outcome = last_json(result.stdout)
    assert outcome["status"] == "no_drift" and outcome["model_tag"] == packaged_model
    (summary,) = [json.loads(p.read_text()) for p in reports.glob("*/summary.json")]
    assert summary["current_rows"] == 40
    window = read_predictions(create_log_engine(log_url))
    assert str(window["created_at"].dt.tz) == "UTC" and len(window) == 40
