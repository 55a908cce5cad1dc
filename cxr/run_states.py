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
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from cxr.core.errors import ExitCode, PipelineError


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
