"""Run states tell the truth: a training run stopped from outside ends Crashed in Prefect
(not Running for ever) with exit 143 / 130, and a task past its timeout ends TimedOut."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
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
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the process ended early ({process.returncode}):\n{output}")
        time.sleep(0.5)
    process.kill()
    pytest.fail("the run never got where the test waits for it")


def _stop(process: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    """Send ``sig`` to the command's whole process group (as Ctrl-C or a scheduler
    does); its exit status and output."""
    os.killpg(process.pid, sig)
    try:  # generous: on a loaded CI machine the shutdown flushes logs and stops servers
        output, _ = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(
            f"cxr train still running 240 s after {sig.name}; it printed:\n{output[-4000:]}"
        )
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
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    process = _start_training(demo_data, tmp_path, env)

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

    def running_task() -> str | None:  # a Ctrl-C soon after the start, the flow in a task
        return next((n for n, s in states("select name, state_type from task_run")), None)

    _wait_for(running_task, process)
    code, output = _stop(process, signal.SIGINT)
    assert code == ExitCode.INTERRUPTED, output[-3000:]
    runs = states(
        "select s.type, s.message from flow_run r join flow_run_state s on s.id = r.state_id"
    )
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


SILENT_FLOW = """
import time
from prefect import flow

@flow(name="cxr-silent-death")
def nap() -> None:
    time.sleep(600)

nap()
"""


@pytest.mark.slow
def test_a_run_killed_without_a_word_is_crashed_by_the_heartbeat_automation(
    prefect_server: str, tmp_path: Path
) -> None:
    """SIGKILL leaves the process no chance to report: the automation `cxr deploy` saves
    marks the run Crashed once its heartbeats stop (here after 3 x 10 s)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.objects import StateType
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from cxr.run_states import save_lost_heartbeat_automation

    client = get_client(sync_client=True)
    named = FlowFilter(name=FlowFilterName(any_=["cxr-silent-death"]))
    automation = save_lost_heartbeat_automation(heartbeat_seconds=10)
    assert save_lost_heartbeat_automation(heartbeat_seconds=10).id == automation.id  # one
    script = tmp_path / "silent.py"
    script.write_text(SILENT_FLOW)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    process = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)

    def running() -> str | None:
        runs = client.read_flow_runs(flow_filter=named)
        return next((str(run.id) for run in runs if run.state.is_running()), None)

    try:
        run_id = _wait_for(running, process)

        def heartbeat() -> str | None:  # stored, so the server has seen it
            beats = EventFilter(  # occurred.until: now
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
            )
            return "beat" if client.read_events(beats, limit=1).events else None

        _wait_for(heartbeat, process)
        process.kill()  # SIGKILL after its first heartbeat: no state can be reported
        process.wait(timeout=30)
        deadline = time.time() + 90
        while time.time() < deadline and not client.read_flow_run(run_id).state.is_final():
            time.sleep(1)
        state = client.read_flow_run(run_id).state
        assert state.type == StateType.CRASHED, state
        assert state.message.startswith("No heartbeat for 30 s")
    finally:
        process.kill()
        automation.delete()  # other tests' long runs beat every 180 s, not 10


class DroppingProxy:
    """A TCP proxy to the Prefect API that cuts the first events websocket
    (``/api/events/in``) ``after`` seconds into it, as a load balancer or a restarting
    server would."""

    def __init__(self, upstream: str, after: float) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(upstream)
        self.upstream, self.after, self.events_connections = (parts.hostname, parts.port), after, 0
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}{parts.path}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self.upstream)
            first = client.recv(65536)
            server.sendall(first)
            if first.startswith(b"GET /api/events/in"):
                self.events_connections += 1
                if self.events_connections == 1:
                    threading.Timer(self.after, self._cut_first, (client, server)).start()
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def _cut_first(self, *sockets: socket.socket) -> None:
        _cut(*sockets)
        self.cut.set()

    def close(self) -> None:
        self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    _cut(source, sink)


def _cut(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.mark.slow
def test_prefect_sends_an_event_again_after_its_connection_drops(prefect_server: str) -> None:
    """The drift and promotion events need no retry loop of ours: Prefect's events
    client reconnects and sends again what the server had not confirmed."""
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.events.filters import EventFilter, EventNameFilter
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    proxy = DroppingProxy(prefect_server, after=1.0)
    try:
        with temporary_settings({PREFECT_API_URL: proxy.url}):
            emit_event("cxr.test.warm-up", resource={"prefect.resource.id": "cxr.test"})
            assert proxy.cut.wait(timeout=60)  # the warm-up's connection is gone
            time.sleep(1)
            sent = emit_event("cxr.test.after-drop", resource={"prefect.resource.id": "cxr.test"})
            EventsWorker.drain_all(timeout=60)
    finally:
        proxy.close()
    assert sent is not None and proxy.events_connections >= 2  # it did reconnect
    client = get_client(sync_client=True)
    names = EventNameFilter(name=["cxr.test.warm-up", "cxr.test.after-drop"])
    deadline, stored = time.time() + 30, []
    while time.time() < deadline and len(stored) < 2:
        stored = client.read_events(EventFilter(event=names), limit=10).events
        time.sleep(0.5)
    assert sorted(event.event for event in stored) == ["cxr.test.after-drop", "cxr.test.warm-up"]
    assert sent.id in {event.id for event in stored}
