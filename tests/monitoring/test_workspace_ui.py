"""Every drift report lands in the Evidently workspace, and ``cxr monitor-ui`` shows it:
two monitoring passes (plain functions on small prediction logs of the packaged model)
fill the workspace, the real command starts Evidently's UI, and a real headless browser
(Debian's chromium) finds the project, its dashboard of drift over time and the latest
report. Without chromium the browser test skips; with ``CI=true`` it fails (``.ci/run``
installs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from cxr.core.config import load_settings
from cxr.core.runs import Run
from cxr.monitor.check import check_drift, load_reference
from cxr.monitor.drift import DriftSummary
from cxr.monitor.workspace import (
    TAB,
    add_pass,
    added_at,
    open_project,
    project_name,
    prune,
    window_snapshot,
)
from cxr.serve.prediction_log import create_log_engine, log_prediction
from cxr.serve.server_process import free_port
from tests.conftest import IN_CI, REPO, run_cli

LOG_COLUMNS = [
    "covid_probability", "label", "width", "height", "mode", "bytes", "mean_intensity",
    "std_intensity", "entropy", "sharpness", "dark_fraction",
]  # fmt: skip


def _log(url: str, tag: str, rows: pd.DataFrame) -> None:
    """Write ``rows`` to a new prediction log as the service would have answered them."""
    engine = create_log_engine(url)
    try:
        for row in rows[LOG_COLUMNS].to_dict("records"):
            extra = {"request_id": uuid.uuid4().hex, "model_tag": tag, "threshold": 0.5}
            log_prediction(engine, {**row, **extra, "latency_ms": 1.0})
    finally:
        engine.dispose()


def _pass(tag: str, rows: pd.DataFrame, folder: Path, workspace: Path) -> dict:
    """One monitoring pass over a log holding ``rows``; its ``summary.json``."""
    url = f"sqlite:///{folder / 'predictions.db'}"
    _log(url, tag, rows)
    settings = load_settings(
        overrides={
            "serve.model_tag": tag,
            "serve.prediction_log_url": url,
            "monitor.workspace_dir": str(workspace),
            "monitor.min_predictions": 30,
        }
    )
    run = Run.create(folder / "reports")
    check_drift(settings, run)
    return json.loads((run.dir / "summary.json").read_text()) | {"run_id": run.run_id}


@pytest.fixture(scope="module")
def workspace(packaged_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A workspace filled by two passes: the model's own reference population, then
    the same images with shifted statistics and every answer COVID (drift)."""
    root = tmp_path_factory.mktemp("workspace-ui")
    tag, reference = load_reference(packaged_model)
    rows = reference.sample(40, replace=len(reference) < 40, random_state=0)
    shifted = rows.assign(
        mean_intensity=rows["mean_intensity"] + 60, covid_probability=0.99, label="COVID"
    )
    passes = [
        _pass(tag, rows, root / "clean", root / "workspace"),
        _pass(tag, shifted, root / "shifted", root / "workspace"),
    ]
    yield {"dir": root / "workspace", "tag": tag, "passes": passes, "root": root}


@pytest.fixture(scope="module")
def ui(workspace: dict) -> Iterator[str]:
    """``cxr monitor-ui`` on a free loopback port; its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "cxr.cli", "monitor-ui", "--workspace", str(workspace["dir"])]
    log = (workspace["root"] / "ui.log").open("w")
    server = subprocess.Popen(
        [*command, "--port", str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}/api/version", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    else:
        pytest.fail(f"cxr monitor-ui did not start:\n{(workspace['root'] / 'ui.log').read_text()}")
    yield url
    os.killpg(server.pid, signal.SIGINT)
    server.wait(timeout=30)
    log.close()


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium not found (apt-get install chromium; .ci/run installs it)"
        if IN_CI:
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    return found


def _page_text(browser: str, url: str, profile: Path) -> str:
    """The visible text of ``url`` once Evidently's JS app has rendered it, one line per
    DOM text node (headless chromium, no sandbox, no background networking)."""
    done = subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
            "--virtual-time-budget=10000", "--dump-dom", url,
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    dom = re.sub(r"<(script|style)\b.*?</\1>", "", done.stdout, flags=re.S)
    lines = (line.strip() for line in re.sub(r"<[^>]+>", "\n", dom).splitlines())
    return "\n".join(line for line in lines if line)


@pytest.mark.slow
@pytest.mark.real_data
def test_each_pass_is_a_run_of_the_models_project(workspace: dict, ui: str) -> None:
    clean, shifted = workspace["passes"]
    assert shifted["status"] == "drift" and clean["workspace_run"] and shifted["workspace_run"]
    projects = httpx.get(f"{ui}/api/projects", timeout=30).json()
    assert [p["name"] for p in projects] == [project_name(workspace["tag"])]
    snapshots = httpx.get(f"{ui}/api/projects/{projects[0]['id']}/snapshots", timeout=30).json()
    latest = max(snapshots, key=lambda s: s["timestamp"])
    assert len(snapshots) == 2 and latest["id"] == shifted["workspace_run"]
    assert latest["tags"] == ["drift"] and latest["metadata"]["model_tag"] == workspace["tag"]
    assert latest["metadata"]["monitoring_run"] == shifted["run_id"]


@pytest.mark.slow
@pytest.mark.real_data
def test_a_headless_browser_finds_the_dashboard_and_the_latest_report(
    workspace: dict, ui: str, tmp_path: Path
) -> None:
    browser = _chromium()
    shifted = workspace["passes"][1]
    project = httpx.get(f"{ui}/api/projects", timeout=30).json()[0]
    home = _page_text(browser, f"{ui}/", tmp_path / "profile")
    assert project["name"] in home.splitlines()

    dashboard = _page_text(browser, f"{ui}/projects/{project['id']}", tmp_path / "profile")
    for title in ("Share of drifted columns", "Prediction share: COVID", "Window size"):
        assert title in dashboard, dashboard[:3000]
    counter = dashboard.splitlines()
    assert counter[counter.index("Predictions, last window") + 1] == "40"  # the latest window

    reports = _page_text(browser, f"{ui}/projects/{project['id']}/reports", tmp_path / "profile")
    names = [line for line in reports.splitlines() if line.startswith(workspace["tag"] + " |")]
    assert len(names) == 2 and names[0].endswith("| drift"), reports[:3000]  # newest first

    report_url = f"{ui}/projects/{project['id']}/reports/{shifted['workspace_run']}"
    report = _page_text(browser, report_url, tmp_path / "profile")
    assert "Dataset Drift" in report and "Row count in dataset" in report, report[:3000]


def test_the_dashboard_is_made_once_and_gains_the_ood_panel(tmp_path: Path) -> None:
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(tmp_path))
    first = open_project(workspace, "cxr-classifier", "COVID", ood=False)
    again = open_project(workspace, "cxr-classifier", "COVID", ood=True)
    assert first.id == again.id and len(workspace.list_projects()) == 1
    dashboard = workspace.get_dashboard(first.id)
    titles = [panel.title for panel in dashboard.panels]
    assert len(titles) == len(set(titles)) and titles[-1] == "Out-of-distribution share"
    assert [tab.title for tab in dashboard.tabs] == [TAB]


def test_runs_older_than_the_retention_leave_the_workspace(tmp_path: Path) -> None:
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(tmp_path))
    project = open_project(workspace, "cxr-classifier", "COVID", ood=False)
    current = pd.DataFrame({"label": ["COVID", "Normal", "COVID"]})
    before = datetime.now(UTC) - timedelta(seconds=1)
    for _ in range(2):
        workspace.add_run(project.id, window_snapshot(current, "COVID"))
    after = datetime.now(UTC) + timedelta(seconds=10)  # uuid7 runs ahead 1 ms per id in a burst
    runs = workspace.list_runs(project.id)
    assert len(runs) == 2 and all(before <= added_at(run) <= after for run in runs)
    later = datetime.now(UTC) + timedelta(days=2)
    assert prune(workspace, project.id, 3.0, later) == 0
    assert prune(workspace, project.id, None, later) == 0
    assert prune(workspace, project.id, 1.0, later) == 2 and workspace.list_runs(project.id) == []


def test_a_window_without_a_report_adds_no_run(tmp_path: Path) -> None:
    window = ("2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+00:00")
    summary = DriftSummary("not_enough_data", *window, 3, reference_rows=80, min_rows=30)
    current = pd.DataFrame({"label": ["COVID"] * 3})
    added = add_pass(tmp_path / "ws", tmp_path, "r1", "cxr:v1", summary, current, "COVID")
    assert added is None and not (tmp_path / "ws").exists()


def test_monitor_ui_without_a_workspace_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("monitor-ui", "--workspace", str(tmp_path / "none"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no Evidently workspace" in result.stderr and "cxr monitor" in result.stderr


@pytest.mark.slow
@pytest.mark.real_data
def test_a_workspace_that_cannot_be_written_costs_the_dashboard_not_the_verdict(
    workspace: dict, caplog: pytest.LogCaptureFixture
) -> None:
    root = workspace["root"]
    blocked = root / "not-a-folder"
    blocked.write_text("a file where the workspace should be")
    _, reference = load_reference(workspace["tag"])
    rows = reference.sample(40, replace=len(reference) < 40, random_state=1)
    shifted = rows.assign(mean_intensity=rows["mean_intensity"] + 60, label="COVID")
    with caplog.at_level("ERROR", logger="cxr.monitor.check"):
        summary = _pass(workspace["tag"], shifted, root / "blocked", blocked)
    assert summary["status"] == "drift" and summary["workspace_run"] is None
    assert "not added to the Evidently workspace" in caplog.text
