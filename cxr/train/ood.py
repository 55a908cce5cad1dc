"""Fitting of the out-of-distribution detector (:mod:`cxr.core.ood`) of a trained model:
one component per feature tap, each the Mahalanobis distance under a Ledoit-Wolf shrunk
covariance of the training split's features, normalised by its own threshold on the
validation split; the detector's threshold keeps ``keep_share`` of the validation split
under the largest normalised score. Then the share of the test split the detector would
refuse (the gate still scores every test image by its raw verdict)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from cxr.core.inference import Predictor, feature_model
from cxr.core.ood import Component, OODDetector, default_layers
from cxr.train.evaluation import wilson_interval

FEATURE_BATCH = 32


def choose_threshold(val_scores: np.ndarray, keep_share: float) -> float:
    """The smallest validation score that keeps at least ``keep_share`` of the
    validation images (score <= threshold)."""
    scores = np.sort(np.asarray(val_scores, np.float64))
    if scores.size == 0:
        raise ValueError("the OOD threshold needs validation images")
    index = max(0, int(np.ceil(keep_share * scores.size)) - 1)
    return float(scores[index])


def tap_widths(model: keras.Model, layers: Sequence[str]) -> list[int]:
    """The width of each tap's slice of the feature vector (from the graph, no data)."""
    return [int(feature_model(model, [layer]).outputs[1].shape[-1]) for layer in layers]


def mahalanobis_component(name: str, start: int, train_features: np.ndarray) -> Component:
    """Mahalanobis distance to the training mean of ``train_features`` (n, d) under the
    Ledoit-Wolf shrunk covariance; scale 1 until the validation split sets it."""
    covariance = LedoitWolf().fit(train_features)
    return Component(
        name=name, kind="mahalanobis", start=start, stop=start + train_features.shape[1],
        centres=covariance.location_[None].astype(np.float64),
        precision=covariance.precision_.astype(np.float64),
    )  # fmt: skip


def fit_detector(
    model: keras.Model,
    train_x: np.ndarray,
    val_x: np.ndarray,
    keep_share: float,
    layers: Sequence[str] | None = None,
) -> OODDetector:
    """Fit each tap's component on the training split's features; scale each by its own
    threshold on the validation split, then threshold their maximum there."""
    layers = list(layers or default_layers(model))
    predictor = Predictor(model, FEATURE_BATCH, layers)
    train_features = predictor.outputs(train_x)[1]
    val_features = predictor.outputs(val_x)[1]
    components, start = [], 0
    for layer, width in zip(layers, tap_widths(model, layers), strict=True):
        component = mahalanobis_component(layer, start, train_features[:, start : start + width])
        component.scale = choose_threshold(component.raw(val_features), keep_share)
        components.append(component)
        start += width
    detector = OODDetector(layers=layers, components=components, keep_share=keep_share)
    detector.threshold = choose_threshold(detector.score(val_features), keep_share)
    return detector


def ood_scores(model: keras.Model, detector: OODDetector, x: np.ndarray) -> np.ndarray:
    """The detector's score of each image of ``x``, through the compiled two-output path."""
    return detector.score(Predictor(model, FEATURE_BATCH, detector.layers).outputs(x)[1])


def refusal_summary(detector: OODDetector, scores: np.ndarray) -> dict[str, object]:
    """The share of images the detector refuses, with its 95% Wilson interval."""
    refused = int((~detector.in_distribution(scores)).sum())
    return {
        "n": int(len(scores)),
        "refused": refused,
        "refused_share": refused / len(scores) if len(scores) else None,
        "refused_ci95": list(wilson_interval(refused, len(scores))),
    }


def auroc_interval(
    positive: np.ndarray, negative: np.ndarray, seed: int, draws: int = 2000
) -> tuple[float, float, float]:
    """AUROC of the score separating ``positive`` (OOD) from ``negative`` (unseen
    in-distribution) images, with a 95% stratified bootstrap interval."""

    def auc(pos: np.ndarray, neg: np.ndarray) -> float:
        labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        return float(roc_auc_score(labels, np.r_[pos, neg]))

    rng = np.random.default_rng(seed)
    samples = [
        auc(rng.choice(positive, len(positive)), rng.choice(negative, len(negative)))
        for _ in range(draws)
    ]
    low, high = np.percentile(samples, [2.5, 97.5])
    return auc(positive, negative), float(low), float(high)


def ood_markdown(results: dict[str, dict]) -> str:
    """The comparison report's section: each model's detector and its test refusals."""
    lines = [
        "",
        "## Out-of-distribution check (test split)",
        "",
        "The gate scores every test image by its raw verdict; this is the share of the "
        "test split the model's detector would answer as out of distribution.",
        "",
        "| model | features | threshold | validation kept | test refused (95% CI) |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        ood = result.get("ood")
        if not ood:
            continue
        test, (low, high) = ood["test"], ood["test"]["refused_ci95"]
        lines.append(
            f"| {name} | {ood['feature_dim']} ({', '.join(ood['layers'])}) "
            f"| {ood['threshold']:.2f} | {ood['val_kept_share']:.3f} "
            f"| {test['refused']}/{test['n']} = {test['refused_share']:.3f} "
            f"({low:.3f}-{high:.3f}) |"
        )
    return "\n".join(lines) + "\n"
