"""The loop "serve -> monitor -> alert -> retrain -> gate -> promote -> serve" as a team
leaves it running, on the synthetic demo data: `cxr deploy` registers deploy/prefect.yaml
on a real Prefect server, a real `prefect worker` on the process pool runs every flow, a
real webhook receiver gets the alerts and the real service answers. Drifting traffic ->
one alert for three monitoring runs -> the retraining deployment's drift trigger starts
one retraining (a second drift event while it runs gives a run that the concurrency
limit cancels) -> the challenger, as good as production, is promoted; a worse one is not
-> the service answers with the promoted model's tag.

The retraining is demo-sized through a settings file given to `cxr deploy --config`:
the LSTM baseline alone, 12 epochs at 32 px on the 2 x 300 phantoms of `cxr demo-data`;
it passes the gate (0.95 accuracy on its test split of 60) for real."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from cxr.data.demo_data import write_demo_dataset
from tests.conftest import REPO
from tests.model.test_promotion_cli import _artifact_keys, _cli, _ok, _production, _serve

pytestmark = pytest.mark.slow

RETRAINING = "cxr-training/scheduled-retraining"
MONITORING = "cxr-monitoring/drift-monitoring"


def _settings_file(home: Path) -> Path:
    """The team's settings file: a demo-sized retraining, the comparison set, the log."""
    comparison = write_demo_dataset(home / "comparison", per_class=20, seed=11)
    settings = {
        "runs_dir": str(home / "runs"),
        "train": {"models": ["lstm"], "epochs": 12},
        "gate": {"model": "lstm"},
        "packaging": {"build_bento": False, "comparison_dir": str(comparison)},
        "serve": {"prediction_log_url": f"sqlite:///{home / 'predictions.db'}"},
    }
    path = home / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _drifting_images(home: Path, n: int) -> list[Path]:
    """Phantoms the model never saw, inverted: the films of another scanner."""
    source = write_demo_dataset(home / "unseen", per_class=n // 2, seed=23)
    folder = home / "drifting"
    folder.mkdir()
    for path in sorted(source.glob("*/images/*.png")):
        pixels = np.asarray(Image.open(path))
        Image.fromarray((255 - pixels).astype(np.uint8)).save(folder / path.name)
    return sorted(folder.glob("*.png"))


@pytest.fixture(scope="module")
def worker(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`prefect worker start --pool cxr-local` against the module's Prefect server; its
    flow runs use the BentoML store under the returned folder."""
    home = tmp_path_factory.mktemp("worker")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "BENTOML_HOME": str(home / "bentoml")}
    env |= {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_HOME": str(home / "prefect")}
    log = open(home / "worker.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "cxr-local"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    yield home
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    log.close()


def _run(api: str, name: str, parameters: dict[str, Any] | None = None) -> Any:
    """Have the worker run deployment ``name`` and wait for the end; the flow run."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}):
        return run_deployment(name, parameters=parameters, timeout=1500, poll_interval=2)


def _retraining_runs(api: str) -> list:
    """The flow runs of the retraining deployment, oldest first, less those its weekly
    schedule created ahead of time."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    only = DeploymentFilter(name=DeploymentFilterName(any_=["scheduled-retraining"]))
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=only)
    return sorted((r for r in runs if not r.auto_scheduled), key=lambda r: r.created)


def _wait(api: str, flow_run_id: Any, until: str, timeout_s: float = 1500) -> Any:
    """The flow run once it left Scheduled (``until="started"``) or ended ("final")."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.time() + timeout_s
    while True:
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
        if run.state.is_final() or (until == "started" and not run.state.is_scheduled()):
            return run
        if time.time() > deadline:
            pytest.fail(f"flow run {flow_run_id} still {run.state.type} after {timeout_s} s")
        time.sleep(2)


def _emit_drift(api: str, tag: str) -> None:
    """The event the monitor emits when a drift episode of model ``tag`` starts."""
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    event = Event(
        event="cxr.drift.detected",
        resource={"prefect.resource.id": f"cxr.model.{tag}", "prefect.resource.name": tag},
        payload={"status": "drift"},
    )

    async def send() -> None:
        async with PrefectEventsClient(api_url=api) as client:
            await client.emit(event)

    asyncio.run(send())


def _decision(home: Path, flow_run_id: Any) -> dict:
    """promotion.json of the training run that flow run ``flow_run_id`` made."""
    for metrics in (home / "runs").glob("*/metrics.json"):
        if json.loads(metrics.read_text()).get("prefect_flow_run_id") == str(flow_run_id):
            return json.loads((metrics.parent / "promotion.json").read_text())
    pytest.fail(f"no run folder of flow run {flow_run_id} in {home / 'runs'}")


def test_drift_retrains_once_under_a_worker_and_the_service_answers_with_the_promoted_model(
    prefect_api: str, worker: Path, make_receiver, tmp_path: Path
) -> None:
    home = worker
    data = write_demo_dataset(home / "data", per_class=300, seed=0)
    settings = _settings_file(home)
    hook, received = make_receiver(200)
    api = {"PREFECT_API_URL": prefect_api}
    _ok(_cli(home, "alert-block", "create", "ward-alerts", "--url", hook, **api))
    deployed = _cli(
        home, "deploy", "--data-dir", str(data), "--profile", "demo", "--config", str(settings),
        "--alert-block", "ward-alerts", "--retrain-on-drift", **api,
    )  # fmt: skip
    assert "retraining on drift: on" in _ok(deployed)

    # the weekly retraining, run now by the worker: the first model to pass the gate
    first = _run(prefect_api, RETRAINING)
    assert first.state.is_completed(), first.state
    assert {"promotion", "gate"} <= _artifact_keys(prefect_api, str(first.id))
    champion = _decision(home, first.id)
    assert champion["promoted"] and champion["comparison"] is None
    assert _production(home) == champion["challenger"]

    # the service, then drifting traffic in its prediction log
    started = datetime.now(UTC)
    running = _serve(home)
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            for path in _drifting_images(tmp_path, 40):
                answer = client.post("/predict", files={"image": (path.name, path.read_bytes())})
                assert answer.status_code == 200, answer.text
    finally:
        running.stop()

    # a monitoring run by the worker: drift, one alert, the event; the trigger retrains
    monitoring = [_run(prefect_api, MONITORING)]
    deadline = time.time() + 120
    while not (triggered := [r for r in _retraining_runs(prefect_api) if r.id != first.id]):
        assert time.time() < deadline, "the drift trigger started no retraining"
        time.sleep(1)
    (retraining,) = triggered
    assert retraining.created >= started
    assert retraining.parameters["data_dir"] == str(data.resolve())  # the deployment's own
    retraining = _wait(prefect_api, retraining.id, until="started")
    assert retraining.state.is_pending() or retraining.state.is_running(), retraining.state

    # a second drift event while it runs: its run is cancelled by the concurrency limit
    _emit_drift(prefect_api, champion["challenger"])
    deadline = time.time() + 120
    while len(runs := _retraining_runs(prefect_api)) < 3:
        assert time.time() < deadline, "the second drift event started no run"
        time.sleep(1)
    (second,) = [r for r in runs if r.id not in (first.id, retraining.id)]
    second = _wait(prefect_api, second.id, until="final", timeout_s=120)
    assert second.state.is_cancelled(), second.state
    assert "concurrency limit" in (second.state.message or "")

    # two more monitoring runs (a schedule would make them 15 min apart): same episode
    monitoring += [_run(prefect_api, MONITORING) for _ in range(2)]
    assert all(run.state.is_completed() for run in monitoring), [r.state for r in monitoring]
    assert {"drift-summary", "drift-columns"} <= _artifact_keys(prefect_api, str(monitoring[0].id))
    assert [body["kind"] for body in received] == ["drift"]  # one alert, not three
    assert received[0]["model_tag"] == champion["challenger"]
    assert len(_retraining_runs(prefect_api)) == 3  # no more drift events, no more runs

    retraining = _wait(prefect_api, retraining.id, until="final")
    assert retraining.state.is_completed(), retraining.state
    as_good = _decision(home, retraining.id)
    assert as_good["champion"] == champion["challenger"]
    assert as_good["comparison"]["images"] == 40 and as_good["promoted"], as_good
    assert _production(home) == as_good["challenger"]

    # a worse challenger: one epoch (a near-constant answer), past a gate lowered to 0
    worse = _run(prefect_api, RETRAINING, {"overrides": {"train.epochs": 1, "gate.min_score": 0}})
    assert worse.state.is_completed(), worse.state
    refused = _decision(home, worse.id)
    comparison = refused["comparison"]
    assert not refused["promoted"] and "worse beyond the margin" in refused["reason"]
    assert comparison["challenger_accuracy"] < comparison["champion_accuracy"] - 0.02
    assert _production(home) == as_good["challenger"]
    assert len(_retraining_runs(prefect_api)) == 4  # first, triggered, cancelled, worse

    running = _serve(home)  # what a restart of the service serves
    try:
        info = httpx.post(f"{running.url}/info", json={}, timeout=60).json()
    finally:
        running.stop()
    assert info["model_tag"] == as_good["challenger"]
