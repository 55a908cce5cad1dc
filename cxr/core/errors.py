"""Every exit code of the ``cxr`` commands, and the errors that stop a stage.

``EXIT_CODES`` is the one table: the CLI returns these values, ``cxr --help`` and the
README list them. Each error class carries the code the CLI returns for it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a ``cxr`` command's exit status means."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    DATA_INVALID = 3
    GATE_REJECTED = 4
    DRIFT = 5
    NOT_ENOUGH_DATA = 6
    ALERT_FAILED = 7
    INTERRUPTED = 130  # 128 + SIGINT, as shells and Typer report a Ctrl-C
    TERMINATED = 143  # 128 + SIGTERM, as schedulers expect of a job they stopped


EXIT_CODES: dict[ExitCode, str] = {
    ExitCode.OK: "done: the model was packaged, or monitoring found no drift",
    ExitCode.FAILED: "a stage failed for another reason (the message says which)",
    ExitCode.BAD_INPUT: "bad input: data folder, configuration, run id, model tag or option",
    ExitCode.DATA_INVALID: "the data failed validation; nothing was trained",
    ExitCode.GATE_REJECTED: "the gate rejected the model; nothing was packaged",
    ExitCode.DRIFT: "monitoring found drift (alerts: one per episode and cool-down)",
    ExitCode.NOT_ENOUGH_DATA: "monitoring had too few predictions in the window to decide",
    ExitCode.ALERT_FAILED: "monitoring could not deliver an alert, even after its retries",
    ExitCode.INTERRUPTED: "stopped by Ctrl-C (SIGINT); the Prefect flow run ends Crashed",
    ExitCode.TERMINATED: "stopped by SIGTERM (e.g. a scheduler); the Prefect flow run ends Crashed",
}

MONITOR_STATUS_EXIT: dict[str, ExitCode] = {
    "no_drift": ExitCode.OK,
    "drift": ExitCode.DRIFT,
    "not_enough_data": ExitCode.NOT_ENOUGH_DATA,
}


class PipelineError(Exception):
    """A stage refused to go on; ``exit_code`` is what the CLI returns."""

    exit_code: ExitCode = ExitCode.FAILED


class DataInputError(PipelineError):
    """The data folder, a model tag, a file or an option could not be used."""

    exit_code = ExitCode.BAD_INPUT


class ConfigError(DataInputError, ValueError):
    """A configuration file, profile, override or run id is invalid."""


class DataValidationError(PipelineError):
    """The dataset failed its Great Expectations suite; nothing was trained."""

    exit_code = ExitCode.DATA_INVALID


class GateRejectedError(PipelineError):
    """The chosen model missed the metric gate; nothing was packaged."""

    exit_code = ExitCode.GATE_REJECTED


class AlertError(PipelineError):
    """The webhook did not accept the alert (the Prefect event was still emitted)."""

    exit_code = ExitCode.ALERT_FAILED


def exit_codes_text() -> str:
    """The table as lines of text, for ``--help``."""
    return "\n".join(f"{int(code)}  {meaning}" for code, meaning in EXIT_CODES.items())
