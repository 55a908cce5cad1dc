"""The CLI as a new user runs it: no Prefect server, an empty Prefect home, an empty model
store. Prefect then starts a temporary server whose database is created on first use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, last_json

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def _new_user_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BENTOML_"))}
    env |= {"PREFECT_HOME": str(home / "prefect"), "BENTOML_HOME": str(home / "bentoml")}
    env |= {"CXR_SERVE__PREDICTION_LOG_URL": f"sqlite:///{home / 'predictions.db'}"}
    command = [sys.executable, "-m", "cxr.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)


def test_the_temporary_server_gets_time_for_a_first_start(tmp_path: Path) -> None:
    code = (
        "import cxr.cli; from prefect.settings import get_current_settings; "
        "print(get_current_settings().server.ephemeral.startup_timeout_seconds)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert int(done.stdout.split()[-1]) >= 120, done.stderr[-2000:]  # Prefect's default: 20


def test_train_then_monitor_on_a_machine_that_never_ran_prefect(small_real_dataset, tmp_path):
    assert not (tmp_path / "prefect").exists()
    args = ["train", "--data-dir", str(small_real_dataset), "--profile", "demo"]
    args += ["--image-size", "32", "--epochs", "1", "--model", "lstm", "--set", "gate.model=lstm"]
    args += ["--set", "data.min_images_per_class=5", "--gate-min-score", "0"]
    args += ["--runs-dir", str(tmp_path / "runs")]
    trained = _new_user_cli(tmp_path, *args)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Starting temporary server" in trained.stdout + trained.stderr
    tags = last_json(trained.stdout)
    assert tags["model_tag"].startswith("cxr-classifier:")
    assert (tmp_path / "bentoml" / "models" / "cxr-classifier").is_dir()

    # before anything was served: the monitoring flow runs and says what is missing
    monitored = _new_user_cli(tmp_path, "monitor", "--model", tags["model_tag"])
    assert monitored.returncode == 2, monitored.stderr[-3000:]
    assert "Starting temporary server" in monitored.stdout + monitored.stderr
    assert "error: prediction log not found" in monitored.stderr
