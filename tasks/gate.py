"""Gate task: refuse to package a model below the configured test metric."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cxr.core.config import Settings
from cxr.core.runs import Run
from cxr.train.gate import GateDecision, decide, enforce
from tasks.artifacts import publish_markdown


@task(name="gate", cache_policy=NO_CACHE)
def gate(results: dict[str, dict], settings: Settings, run: Run) -> GateDecision:
    """Record the decision in ``metrics.json``; raise when the model is rejected."""
    if settings.gate.model not in results:
        raise ValueError(f"gate model {settings.gate.model!r} was not trained this run")
    decision = decide(results[settings.gate.model]["test"], settings.gate)
    run.update_json(
        "metrics.json",
        gate={**decision.__dict__, "passed": decision.passed, "message": decision.describe()},
    )
    publish_markdown("gate", f"## {decision.describe()}\n", f"run {run.run_id}: metric gate")
    (get_run_logger().info if decision.passed else get_run_logger().error)(decision.describe())
    enforce(decision)
    return decision
