"""Task timeouts from the run's settings (``timeouts``): a task past its time ends
TimedOut and the flow run Failed, instead of holding a worker for ever."""

from __future__ import annotations

from typing import Any, TypeVar

from prefect import Task

from cxr.core.config import Settings

T = TypeVar("T", bound=Task[Any, Any])


def timed(task: T, settings: Settings) -> T:
    """``task`` with Prefect's ``timeout_seconds``: ``timeouts.train_minutes`` for the
    training task, ``timeouts.stage_minutes`` for any other (the flow wraps ingestion,
    training, evaluation, packaging and promotion)."""
    limits = settings.timeouts
    minutes = limits.train_minutes if task.name == "train" else limits.stage_minutes
    return task.with_options(timeout_seconds=minutes * 60)
