"""Errors that stop a run, each with its own CLI exit code."""

from __future__ import annotations


class PipelineError(Exception):
    """A stage refused to go on; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class DataValidationError(PipelineError):
    """The dataset failed its Great Expectations suite; nothing was trained."""

    exit_code = 3


class GateRejectedError(PipelineError):
    """The chosen model missed the metric gate; nothing was packaged."""

    exit_code = 4


class DataInputError(PipelineError):
    """The data folder, a model tag or a config could not be used."""

    exit_code = 2
