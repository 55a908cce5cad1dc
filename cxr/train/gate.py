"""The metric gate: a model below the minimum score is never packaged."""

from __future__ import annotations

from dataclasses import dataclass

from cxr.core.config import GateConfig
from cxr.core.errors import GateRejectedError


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the gate for one model."""

    model: str
    metric: str
    value: float
    min_score: float

    @property
    def passed(self) -> bool:
        return self.value >= self.min_score

    def describe(self) -> str:
        verdict = "PASSED" if self.passed else "REJECTED"
        return (
            f"gate {verdict}: {self.model} test {self.metric} = {self.value:.4f} "
            f"(minimum {self.min_score:.4f})"
        )


def decide(test_metrics: dict[str, object], config: GateConfig) -> GateDecision:
    """Compare the chosen model's test metric with the configured minimum."""
    value = test_metrics.get(config.metric)
    return GateDecision(
        model=config.model,
        metric=config.metric,
        value=float(value) if value is not None else float("nan"),
        min_score=config.min_score,
    )


def enforce(decision: GateDecision) -> None:
    """Raise :class:`GateRejectedError` unless the decision passed (NaN never passes)."""
    if not decision.passed:
        raise GateRejectedError(decision.describe() + "; nothing was packaged")
