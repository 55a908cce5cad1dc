"""Champion / challenger promotion of packaged models.

A model that passed the gate (the challenger) becomes production when nothing is in
production yet, when no comparison set is configured, or when its accuracy on the
comparison set is not more than ``promotion_margin`` below the production model's (the
champion), both scored on the same images (paired; McNemar's exact test on the images
only one of them gets right). Promotions and rollbacks go to the record of
:mod:`cxr.core.production`, with the data fingerprint, code version and metrics the
stored model's metadata carries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from cxr.core.config import PackagingConfig
from cxr.core.errors import DataInputError, PipelineError
from cxr.core.model_store import get_stored, read_serving_info
from cxr.core.production import (
    PROMOTE,
    ROLLBACK,
    append_entry,
    current_production,
    production_history,
    read_record,
    split_tag,
)

FLOW = "training flow"


@dataclass(frozen=True)
class Comparison:
    """Both models scored on the same images."""

    comparison_dir: str
    images: int
    challenger_accuracy: float
    champion_accuracy: float
    difference: float  # challenger - champion
    only_challenger_right: int
    only_champion_right: int
    mcnemar_p: float  # exact two-sided test of the discordant images (1.0 when none)


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger became production, and why."""

    challenger: str
    champion: str | None
    promoted: bool
    reason: str
    margin: float
    comparison: Comparison | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        verdict = "PROMOTED" if self.promoted else "NOT PROMOTED"
        return f"{verdict}: {self.challenger} ({self.reason})"

    def markdown(self) -> str:
        """The decision as the Prefect artifact shows it."""
        lines = [f"## {self.describe()}", "", f"- challenger: `{self.challenger}`"]
        lines += [f"- production before: `{self.champion}`", f"- margin: {self.margin}"]
        if self.comparison is not None:
            c = self.comparison
            lines += [
                f"- comparison set: `{c.comparison_dir}` ({c.images} images)",
                "",
                "| model | accuracy |",
                "| --- | --- |",
                f"| challenger | {c.challenger_accuracy:.4f} |",
                f"| production | {c.champion_accuracy:.4f} |",
                "",
                f"difference {c.difference:+.4f}; right only by the challenger: "
                f"{c.only_challenger_right}, only by production: {c.only_champion_right}; "
                f"McNemar exact p = {c.mcnemar_p:.4g}",
            ]
        return "\n".join(lines) + "\n"


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs."""
    discordant = only_a + only_b
    return 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)


def paired(
    challenger_right: np.ndarray, champion_right: np.ndarray, comparison_dir: str
) -> Comparison:
    """Accuracies, difference and McNemar's test of two models' per-image correctness."""
    a, b = np.asarray(challenger_right, bool), np.asarray(champion_right, bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired comparison needs the same, non-empty set of images")
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    return Comparison(
        comparison_dir=comparison_dir,
        images=int(a.size),
        challenger_accuracy=float(a.mean()),
        champion_accuracy=float(b.mean()),
        difference=float(a.mean() - b.mean()),
        only_challenger_right=only_a,
        only_champion_right=only_b,
        mcnemar_p=mcnemar_exact(only_a, only_b),
    )


def decide(
    challenger: str, champion: str | None, comparison: Comparison | None, margin: float
) -> PromotionDecision:
    """The rule: first model -> promoted; no comparison set -> promoted; otherwise
    promoted unless the challenger's accuracy is more than ``margin`` below the
    champion's on the same images."""
    if champion is None:
        reason = "first production model: nothing was in production"
        return PromotionDecision(challenger, None, True, reason, margin, None)
    if comparison is None:
        reason = "no comparison set configured (packaging.comparison_dir): promoted after the gate"
        return PromotionDecision(challenger, champion, True, reason, margin, None)
    worse = comparison.difference < -margin - 1e-12
    reason = (
        f"accuracy {comparison.challenger_accuracy:.4f} vs production "
        f"{comparison.champion_accuracy:.4f} on {comparison.images} unseen images "
        f"({comparison.difference:+.4f}; margin {margin})"
    )
    reason += ": worse beyond the margin" if worse else ": not worse beyond the margin"
    return PromotionDecision(challenger, champion, not worse, reason, margin, comparison)


def correct_on(tag: str, comparison_dir: Path, predictions_csv: Path) -> pd.Series:
    """Whether a packaged model gets each comparison image right (as the service
    answers: calibrated P(COVID) against its cut-off), indexed by image path."""
    from cxr.train.evaluation import evaluate_packaged

    metrics = evaluate_packaged(tag, comparison_dir, None, 0, predictions_csv)
    classes = list(read_serving_info(get_stored(tag))["classes"])
    found = pd.read_csv(predictions_csv)
    predicted = (found["covid_probability"] >= float(metrics["threshold"])).astype(int)
    actual = found["label"].map(classes.index)
    return pd.Series((predicted == actual).to_numpy(), index=found["path"])


def check_unseen(comparison_dir: Path, trained_on: pd.DataFrame) -> None:
    """Refuse a comparison set that shares an image (same bytes) with a run's data."""
    from cxr.core.config import DataConfig
    from cxr.data.ingestion import ingest

    config = DataConfig(samples_per_class=None)
    shared = set(ingest(comparison_dir, config, 0)["sha256"]) & set(trained_on["sha256"])
    if shared:
        raise DataInputError(
            f"the comparison set {comparison_dir} shares {len(shared)} images with this run's "
            "data; use a folder no run trains on (e.g. the unseen/ folder of `cxr holdout`)"
        )


def compare(challenger: str, champion: str, comparison_dir: Path, out_dir: Path) -> Comparison:
    """Score both models on ``comparison_dir``; per-image predictions go to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    a = correct_on(challenger, comparison_dir, out_dir / "challenger_predictions.csv")
    b = correct_on(champion, comparison_dir, out_dir / "production_predictions.csv")
    if set(a.index) != set(b.index):
        raise DataInputError(f"the two models did not read the same images of {comparison_dir}")
    return paired(a.to_numpy(), b.loc[a.index].to_numpy(), str(Path(comparison_dir).resolve()))


def record_entry(tag: str, action: str, by: str, reason: str, **extra: Any) -> dict[str, Any]:
    """One line of the record: the model, who decided and why, and what the stored
    model's metadata says of its data (fingerprint), code (git commit) and metrics."""
    stored = get_stored(tag)
    meta = dict(stored.info.metadata)
    return {
        "action": action,
        "tag": str(stored.tag),
        "by": by,
        "reason": reason,
        "run_id": meta.get("run_id"),
        "dataset_fingerprint": meta.get("dataset_fingerprint"),
        "git_commit": meta.get("git_commit"),
        "synthetic": meta.get("synthetic"),
        "test_metrics": meta.get("test_metrics"),
        **extra,
    }


def promote(tag: str, by: str, reason: str, **extra: Any) -> dict[str, Any]:
    """Make ``tag`` (an explicit or ``:latest`` tag) the production model of its name."""
    entry = record_entry(tag, PROMOTE, by, reason, **extra)
    name, _ = split_tag(entry["tag"])
    entry["previous"] = current_production(name)
    if entry["previous"] == entry["tag"]:
        raise DataInputError(f"{entry['tag']} is already the production model of {name}")
    return append_entry(name, entry)


def rollback(name: str, by: str, reason: str = "rolled back by hand") -> dict[str, Any]:
    """Put the production model before the current one back in production."""
    stack = production_history(read_record(name))
    if len(stack) < 2:
        raise DataInputError(
            f"nothing to roll back to: {name} has {len(stack)} production model(s) on record"
        )
    entry = record_entry(stack[-2], ROLLBACK, by, reason, previous=stack[-1])
    return append_entry(name, entry)


def challenge(
    challenger: str,
    config: PackagingConfig,
    out_dir: Path,
    trained_on: pd.DataFrame | None = None,
    bento_tag: str | None = None,
) -> PromotionDecision:
    """Decide on a packaged model that passed the gate and record a promotion.
    ``trained_on``: the run's ingested images, checked against the comparison set."""
    from cxr.data.ingestion import resolve_dataset_root

    if config.comparison_dir is not None:  # a wrong folder is told on the first run too
        try:
            resolve_dataset_root(config.comparison_dir)
        except PipelineError as error:
            raise DataInputError(f"packaging.comparison_dir: {error}") from error
    name, _ = split_tag(challenger)
    champion = current_production(name)
    comparison = None
    if champion is not None and champion != challenger and config.comparison_dir is not None:
        if trained_on is not None:
            check_unseen(config.comparison_dir, trained_on)
        comparison = compare(challenger, champion, config.comparison_dir, out_dir)
    decision = decide(challenger, champion, comparison, config.promotion_margin)
    if decision.promoted:
        summary = None if comparison is None else asdict(comparison)
        promote(challenger, FLOW, decision.reason, comparison=summary, bento_tag=bento_tag)
    return decision
