"""How a ``cxr`` command that runs a flow in its own process ends when it is stopped
from outside, or when a task runs past its timeout.

Prefect's flow engine records the stop itself: Ctrl-C (SIGINT, ``KeyboardInterrupt``) and
SIGTERM (Prefect's SIGTERM bridge raises ``TerminationSignal`` inside the flow) end the
flow run and its running task Crashed, "Execution was aborted by an interrupt signal" /
"... by a termination signal", before the exception leaves the flow. Two things around
it are done here:

- the exit status: 130 after Ctrl-C (Typer's), 143 after SIGTERM (``ExitCode``), and the
  process ends through Python's normal exit (``finally`` blocks, context managers, atexit:
  a Dask cluster, Prefect's temporary server) instead of being killed by the signal that
  Prefect's bridge sends again once the state is recorded;
- Prefect's temporary server (no ``PREFECT_API_URL``): Prefect starts it as a child in the
  terminal's process group, so a Ctrl-C at the terminal stopped the server at the same
  moment, the Crashed state could not be recorded, the run stayed Running in
  ``$PREFECT_HOME``'s database for ever and the command hung on connection retries. The
  server is started here, before the flow, with SIGINT blocked (a child inherits the
  signal mask), so only the command sees the Ctrl-C; it still stops the server at exit.

A run whose process dies without a word (SIGKILL, the out-of-memory killer, a lost
machine; with Prefect 3.9.1 also a process worker stopped by SIGTERM or Ctrl-C, whose
flow-run processes end without reporting) cannot record its own end. Prefect's flow
engine sends a heartbeat event every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (180)
from every flow run;
:func:`save_lost_heartbeat_automation` saves Prefect's own answer to the silence on the
server, an automation that marks a run Crashed once its heartbeats stop
(``cxr deploy`` saves it).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from cxr.core.errors import ExitCode, PipelineError

if TYPE_CHECKING:
    from prefect.automations import Automation

LOST_HEARTBEAT = "cxr: crash flow runs whose heartbeats stopped"
HEARTBEATS_MISSED = 3  # Prefect's guide waits three heartbeats
FINAL_EVENTS = ["Completed", "Failed", "TimedOut", "Cancelled", "Crashed"]


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM outside Prefect's bridge, or sent again by it once the run is Crashed."""
    raise SystemExit(int(ExitCode.TERMINATED))


def start_temporary_server() -> None:
    """Start Prefect's temporary server of this process now, deaf to SIGINT, when no
    ``PREFECT_API_URL`` is set (Prefect's clients in this process then use it)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        SubprocessASGIServer().start()  # the instance Prefect's get_client() starts
    finally:  # a Ctrl-C that came meanwhile is delivered here, to this process
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)


@contextmanager
def flow_in_this_process() -> Iterator[None]:
    """Around a flow the command runs itself: SIGTERM exits 143 once Prefect has marked
    the run Crashed, and the temporary server (if any) outlives a terminal's Ctrl-C."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        start_temporary_server()
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def timed_out(error: TimeoutError) -> PipelineError:
    """The CLI's message for a task that ran past its ``timeouts`` setting (Prefect has
    set the task TimedOut and the flow run Failed; the log names the task)."""
    return PipelineError(
        f"a task ran past its timeout ({error}); Prefect ended it TimedOut and the flow run "
        "Failed. If it was still making progress, raise timeouts.train_minutes (training) "
        "or timeouts.stage_minutes (any other stage), e.g. --set timeouts.stage_minutes=240"
    )


def lost_heartbeat_automation(heartbeat_seconds: float | None = None) -> Automation:
    """Prefect's automation that sets a flow run Crashed when neither a heartbeat nor a
    final state came within ``HEARTBEATS_MISSED`` heartbeats of its last one
    (``heartbeat_seconds``: default Prefect's ``flows.heartbeat_frequency``)."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification
    from prefect.settings import get_current_settings

    seconds = heartbeat_seconds or get_current_settings().flows.heartbeat_frequency or 180
    within = timedelta(seconds=HEARTBEATS_MISSED * seconds)
    return Automation(
        name=LOST_HEARTBEAT,
        description="A flow run whose process died without reporting (SIGKILL, out of "
        "memory, a lost machine or worker) stops sending heartbeats: mark it Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat"}
            | {f"prefect.flow-run.{name}" for name in FINAL_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {within.total_seconds():.0f} s: the flow run's "
                "process died without reporting (killed, out of memory, machine or worker "
                "lost).",
            )
        ],
    )


def save_lost_heartbeat_automation(heartbeat_seconds: float | None = None) -> Automation:
    """Create or update :func:`lost_heartbeat_automation` on the server in
    ``PREFECT_API_URL`` (one of that name)."""
    automation = lost_heartbeat_automation(heartbeat_seconds)
    try:
        saved = type(automation).read(name=LOST_HEARTBEAT)
    except ValueError:  # none of that name yet
        return automation.create()
    automation.id = saved.id
    automation.update()
    return automation
