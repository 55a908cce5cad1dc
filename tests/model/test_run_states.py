"""Run states tell the truth: a training run stopped from outside ends Crashed in Prefect
(not Running for ever) with exit 143 / 130, and a task past its timeout ends TimedOut."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cxr.core.errors import ExitCode
from cxr.data.demo_data import write_demo_dataset
from cxr.run_states import flow_in_this_process
from tests.conftest import REPO, run_cli

# small synthetic data and a fit far longer than the test: the stop lands in training
LONG_FIT = ["--profile", "demo", "--epochs", "500", "--set", "train.fine_tune_epochs=500"]


def _start_training(data: Path, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``cxr train`` in a process group of its own (as a terminal's foreground job)."""
    args = ["train", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"), *LONG_FIT]
    return subprocess.Popen(
        [sys.executable, "-m", "cxr.cli", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def _wait_for(found: Callable[[], str | None], process: subprocess.Popen[str]) -> str:
    """Poll ``found`` until it returns an id (the process must not end meanwhile)."""
    deadline = time.time() + 240
    while time.time() < deadline:
        if (value := found()) is not None:
            return value
        if process.poll() is not None:
            pytest.fail(f"cxr train ended early ({process.returncode}):\n{process.stdout.read()}")
        time.sleep(0.5)
    process.kill()
    pytest.fail("cxr train never reached its training task")


def _stop(process: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    """Send ``sig`` to the command's whole process group (as Ctrl-C or a scheduler
    does); its exit status and output."""
    os.killpg(process.pid, sig)
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"cxr train still running 120 s after {sig.name}")
    return process.returncode, output


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic images a class (ingestion takes seconds)."""
    return write_demo_dataset(tmp_path_factory.mktemp("demo"), per_class=40, seed=3)


def test_sigterm_in_the_block_exits_143_and_the_handler_is_put_back() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    before = signal.getsignal(signal.SIGTERM)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # no server needed
        with pytest.raises(SystemExit) as stopped, flow_in_this_process():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
    assert stopped.value.code == ExitCode.TERMINATED == 143
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_sigterm_during_training_ends_the_run_crashed(
    prefect_server: str, demo_data: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.objects import StateType

    client = get_client(sync_client=True)
    before = {run.id for run in client.read_flow_runs()}
    process = _start_training(demo_data, tmp_path, {**os.environ, "PREFECT_API_URL": prefect_server})

    def training_run() -> str | None:
        for run in client.read_flow_runs():
            if run.id in before:
                continue
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            tasks = client.read_task_runs(flow_run_filter=flt)
            if any(t.name.startswith("train-") and t.state.is_running() for t in tasks):
                return str(run.id)
        return None

    run_id = _wait_for(training_run, process)
    assert client.read_flow_run(run_id).state.is_running()
    code, output = _stop(process, signal.SIGTERM)
    assert code == ExitCode.TERMINATED, output[-3000:]
    state = client.read_flow_run(run_id).state
    assert state.type == StateType.CRASHED, state
    assert state.message == "Execution was aborted by a termination signal."
    flt = FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
    training = [t for t in client.read_task_runs(flow_run_filter=flt) if t.name.startswith("train")]
    assert [t.state.type for t in training] == [StateType.CRASHED]


@pytest.mark.slow
def test_ctrl_c_on_the_temporary_server_ends_the_run_crashed(
    demo_data: Path, tmp_path: Path
) -> None:
    """No PREFECT_API_URL: Prefect's temporary server shares the terminal with the
    command; a Ctrl-C reaches both, and the run must still be recorded Crashed."""
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    process = _start_training(demo_data, tmp_path, {**env, "PREFECT_HOME": str(home)})

    def states(query: str) -> list[tuple[str, str]]:
        if not (home / "prefect.db").is_file():
            return []
        with sqlite3.connect(f"file:{home / 'prefect.db'}?mode=ro", uri=True) as db:
            try:
                return db.execute(query).fetchall()
            except sqlite3.OperationalError:  # tables not created yet
                return []

    def training_task() -> str | None:
        found = states("select name, state_type from task_run")
        return next((n for n, s in found if n.startswith("train-") and s == "RUNNING"), None)

    _wait_for(training_task, process)
    code, output = _stop(process, signal.SIGINT)
    assert code == ExitCode.INTERRUPTED, output[-3000:]
    runs = states("select state_type, state_message from flow_run")
    assert runs == [("CRASHED", "Execution was aborted by an interrupt signal.")], output[-3000:]
    assert ("RUNNING",) not in {(s,) for _, s in states("select name, state_type from task_run")}


@pytest.mark.slow
def test_a_stage_past_its_timeout_fails_the_run_timed_out(
    prefect_server: str, demo_data: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.objects import StateType

    client = get_client(sync_client=True)
    before = {run.id for run in client.read_flow_runs()}
    args = ["train", "--data-dir", str(demo_data), "--runs-dir", str(tmp_path / "runs")]
    args += ["--profile", "demo", "--set", "timeouts.stage_minutes=0.001"]  # 60 ms
    result = run_cli(*args, api_url=prefect_server)
    assert result.returncode == ExitCode.FAILED, result.stderr[-3000:]
    assert "ran past its timeout" in result.stderr
    assert "timeouts.stage_minutes" in result.stderr
    [run] = [run for run in client.read_flow_runs() if run.id not in before]
    assert run.state.type == StateType.FAILED
    flt = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
    [ingest] = client.read_task_runs(flow_run_filter=flt)
    assert ingest.name.startswith("ingest") and ingest.state.name == "TimedOut"
    assert ingest.state.message == "Task run exceeded timeout of 0.06 second(s)"
