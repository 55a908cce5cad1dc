"""Champion / challenger promotion with real packaged models, in a BentoML store of this
test's own (the session's packaged models are copied into it, never promoted): the
paired comparison on unseen real images, `cxr promote` / `cxr rollback` / `cxr models`,
the service answering with the production model after a restart, and the training flow's
promotion stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bentoml
import httpx
import pytest

from cxr.serve.server_process import ServerProcess, free_port, start_server
from tests.conftest import REPO, last_json, link_dataset, real_images

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

SAVE = """
import json, sys
from pathlib import Path
from cxr.core.model_store import save_model
source, cutoff, run_id = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
serving = json.loads((source / "serving.json").read_text()) | {"cutoff": cutoff}
metadata = {"run_id": run_id, "dataset_fingerprint": "fp-" + run_id, "git_commit": "c0ffee",
            "test_metrics": {"accuracy": 0.9}, "synthetic": False}
print(save_model("cxr-classifier", source / "model.keras", serving, metadata,
                 [source / "reference.csv"]))
"""

CHALLENGE = """
import json, sys
from pathlib import Path
from cxr.core.config import PackagingConfig
from cxr.train.promotion import challenge
tag, comparison_dir, margin, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
config = PackagingConfig(comparison_dir=comparison_dir, promotion_margin=margin)
print(json.dumps(challenge(tag, config, Path(out)).to_dict()))
"""


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENTOML_HOME")}
    return env | {"BENTOML_HOME": str(home / "bentoml"), **extra}


def _run(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=_env(home, **extra),
        cwd=REPO, timeout=900,
    )  # fmt: skip
    return done


def _cli(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return _run(home, "-m", "cxr.cli", *args, **extra)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _production(home: Path) -> str:
    return json.loads(_ok(_cli(home, "models")))["production"]


def _serve(home: Path) -> ServerProcess:
    """`bentoml serve service:XRayClassifier` with the default model tag."""
    log = f"sqlite:///{home / 'predictions.db'}"
    return start_server(
        {"BENTOML_HOME": str(home / "bentoml"), "CXR_SERVE__PREDICTION_LOG_URL": log}
    )


def _info_tag(running: ServerProcess) -> str:
    return httpx.post(f"{running.url}/info", json={}, timeout=60).json()["model_tag"]


def _served_tag(home: Path) -> str:
    """Start the service with the default model tag, ask /info, stop it."""
    running = _serve(home)
    try:
        return _info_tag(running)
    finally:
        running.stop()


def _cxr_serve(home: Path) -> tuple[str, str]:
    """Start `cxr serve` (default model tag), ask /info; its first line and the tag."""
    port, log = free_port(), home / "cxr-serve.log"
    env = _env(home, CXR_SERVE__PREDICTION_LOG_URL=f"sqlite:///{home / 'predictions.db'}")
    command = [sys.executable, "-m", "cxr.cli", "serve", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    running = ServerProcess(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.time() + 180
        while time.time() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{running.url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        tag = httpx.post(f"{running.url}/info", json={}, timeout=60).json()["model_tag"]
    finally:
        running.stop()
    return log.read_text().splitlines()[0], tag


def _bento_models(home: Path, bento: str) -> list[str]:
    code = f"import bentoml; print(*[m.tag for m in bentoml.bentos.get({bento!r}).info.all_models])"
    return _ok(_run(home, "-c", code)).split()


def _promotion_events(api_url: str, since: datetime) -> list:
    """The promotion events the Prefect server holds since ``since``."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    names = ["cxr.model.promoted", "cxr.model.not_promoted"]
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        occurred = EventOccurredFilter(since=since, until=datetime.now(UTC) + timedelta(minutes=1))
        flt = EventFilter(occurred=occurred, event=EventNameFilter(name=names))
        return client.read_events(filter=flt, limit=10).events


def _artifact_keys(api_url: str, flow_run_id: str) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return {a.key for a in client.read_artifacts(artifact_filter=flt)}


@pytest.fixture(scope="module")
def comparison_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 COVID + 20 Normal real radiographs no test model trains on (the packaged
    models use the first 20 of each class, the flow below the first 30). Unbalanced on
    purpose: a model that never says COVID scores 2/3 on it, one that always does 1/3."""
    return link_dataset(
        tmp_path_factory.mktemp("comparison"),
        {
            "COVID": real_images("COVID", 10, offset=900),
            "Normal": real_images("Normal", 20, offset=900),
        },
    )


def test_promotion_rollback_and_the_service_follow_the_record(
    packaged_model: str, comparison_set: Path, tmp_path: Path
) -> None:
    source = bentoml.models.get(packaged_model).path  # the session store's LSTM
    # the same LSTM with cut-offs that make it a constant answer, whatever it learned
    never_covid = "0.9999999"
    first = _ok(_run(tmp_path, "-c", SAVE, source, never_covid, "run-a")).split()[-1]
    same = _ok(_run(tmp_path, "-c", SAVE, source, never_covid, "run-b")).split()[-1]
    always_covid = _ok(_run(tmp_path, "-c", SAVE, source, "1e-9", "run-c")).split()[-1]
    assert len({first, same, always_covid}) == 3
    assert _production(tmp_path) == always_covid  # nothing promoted yet: the latest

    def challenge(tag: str, margin: float, out: str) -> dict:
        done = _run(tmp_path, "-c", CHALLENGE, tag, str(comparison_set), str(margin), out)
        return json.loads(_ok(done).splitlines()[-1])

    decided = challenge(first, 0.02, str(tmp_path / "first"))
    assert decided["promoted"] and decided["comparison"] is None and "first" in decided["reason"]
    # the same weights: as good on the same 30 images -> promoted, no discordant image
    decided = challenge(same, 0.0, str(tmp_path / "same"))
    comparison = decided["comparison"]
    assert decided["promoted"] and decided["champion"] == first
    assert comparison["images"] == 30 and comparison["difference"] == 0.0
    assert comparison["only_challenger_right"] == comparison["only_champion_right"] == 0
    assert comparison["mcnemar_p"] == 1.0
    assert (tmp_path / "same" / "challenger_predictions.csv").is_file()
    assert _production(tmp_path) == same
    # a model that calls every film COVID (1/3) against one that never does (2/3)
    decided = challenge(always_covid, 0.02, str(tmp_path / "worse"))
    comparison = decided["comparison"]
    assert comparison["challenger_accuracy"] == pytest.approx(1 / 3)
    assert comparison["champion_accuracy"] == pytest.approx(2 / 3)
    assert comparison["only_challenger_right"] == 10 and comparison["only_champion_right"] == 20
    assert not decided["promoted"] and "worse beyond the margin" in decided["reason"]
    assert comparison["mcnemar_p"] == pytest.approx(0.09873714670538902)  # 10 of 30
    assert _production(tmp_path) == same  # unchanged

    record = json.loads(_ok(_cli(tmp_path, "models")))
    assert [e["tag"] for e in record["promotions"]] == [first, same]
    assert record["promotions"][1]["comparison"]["images"] == 30
    assert record["promotions"][1]["dataset_fingerprint"] == "fp-run-b"
    assert record["promotions"][1]["git_commit"] == "c0ffee"

    rolled = json.loads(_ok(_cli(tmp_path, "rollback")))
    assert rolled["tag"] == first and rolled["previous"] == same
    refused = _cli(tmp_path, "rollback")
    assert refused.returncode == 2 and "nothing to roll back to" in refused.stderr
    assert _production(tmp_path) == first

    # the service resolves cxr-classifier:production when it starts, and only then
    running = _serve(tmp_path)
    try:
        assert _info_tag(running) == first
        done = _cli(tmp_path, "promote", always_covid, "--reason", "by hand")
        promoted = json.loads(_ok(done))
        assert "restart" in done.stderr
        assert _info_tag(running) == first  # a running service keeps its model
    finally:
        running.stop()
    assert promoted["tag"] == always_covid and promoted["by"] == "cxr promote"
    assert promoted["reason"] == "by hand" and promoted["previous"] == first
    assert _served_tag(tmp_path) == always_covid  # after a restart
    first_line, tag = _cxr_serve(tmp_path)  # `cxr serve` resolves it and says which
    assert tag == always_covid
    assert first_line.startswith(f"serving {always_covid} (cxr-classifier:production) on")
    missing = _cli(tmp_path, "promote", "cxr-classifier:nosuchversion")
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_the_training_flow_challenges_the_production_model(
    prefect_server: str, packaged_model: str, small_real_dataset: Path, comparison_set: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    source = bentoml.models.get(packaged_model).path
    champion = _ok(_run(tmp_path, "-c", SAVE, source, "0.5", "run-a")).split()[-1]
    _ok(_cli(tmp_path, "promote", champion))
    args = ["train", "--data-dir", str(small_real_dataset), "--profile", "demo"]
    args += ["--image-size", "32", "--epochs", "1", "--model", "lstm", "--set", "gate.model=lstm"]
    args += ["--set", "data.min_images_per_class=5", "--gate-min-score", "0"]
    args += ["--set", "packaging.build_bento=false", "--set", "packaging.promotion_margin=1"]
    args += ["--set", f"packaging.comparison_dir={comparison_set}"]
    args += ["--runs-dir", str(tmp_path / "runs"), "--run-id", "challenger"]
    started = datetime.now(UTC)
    trained = _cli(tmp_path, *args, PREFECT_API_URL=prefect_server)
    result = last_json(_ok(trained))
    assert result["promoted"] is True  # margin 1: any model that passed the gate
    run = tmp_path / "runs" / "challenger"
    decision = json.loads((run / "promotion.json").read_text())
    assert decision["champion"] == champion and decision["challenger"] == result["model_tag"]
    assert decision["comparison"]["images"] == 30
    assert json.loads((run / "metrics.json").read_text())["promotion"] == decision
    assert (run / "promotion" / "production_predictions.csv").is_file()
    record = json.loads(_ok(_cli(tmp_path, "models")))
    assert record["production"] == result["model_tag"]
    latest = record["promotions"][-1]
    assert latest["by"] == "training flow" and latest["run_id"] == "challenger"
    assert latest["git_commit"] and len(latest["dataset_fingerprint"]) == 64
    assert latest["test_metrics"]["n"] == 6

    flow_run_id = json.loads((run / "metrics.json").read_text())["prefect_flow_run_id"]
    assert "promotion" in _artifact_keys(prefect_server, flow_run_id)
    deadline = time.time() + 60
    while not (events := _promotion_events(prefect_server, started)) and time.time() < deadline:
        time.sleep(1)
    assert [event.event for event in events] == ["cxr.model.promoted"]
    assert events[0].resource.id == f"cxr.model.{result['model_tag']}"
    assert events[0].payload["comparison"]["images"] == 30


def test_a_bento_serves_the_model_it_was_built_around_whatever_is_in_production(
    packaged_model: str, tmp_path: Path
) -> None:
    source = bentoml.models.get(packaged_model).path
    pinned = _ok(_run(tmp_path, "-c", SAVE, source, "0.5", "run-a")).split()[-1]
    production = _ok(_run(tmp_path, "-c", SAVE, source, "0.5", "run-b")).split()[-1]
    _ok(_cli(tmp_path, "promote", production))
    build = f"from cxr.train.packaging import build_bento; print(build_bento({pinned!r}))"
    bento = _ok(_run(tmp_path, "-c", build)).split()[-1]
    folder = tmp_path / "outside"  # nothing of the working tree can be imported from here
    folder.mkdir()
    env = {"BENTOML_HOME": str(tmp_path / "bentoml")}
    env["CXR_SERVE__PREDICTION_LOG_URL"] = f"sqlite:///{folder / 'predictions.db'}"
    running = start_server(env, target=bento, cwd=folder)  # no CXR_SERVE__MODEL_TAG
    try:
        info = httpx.post(f"{running.url}/info", json={}, timeout=60).json()
    finally:
        running.stop()
    # the bento's service.py reads the model it was built around from its bento.yaml:
    # building a bento is choosing its model, whatever is in production
    assert info["model_tag"] == pinned != production
    assert _bento_models(tmp_path, bento) == [pinned]
