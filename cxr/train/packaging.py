"""Packaging of a model that passed the gate: BentoML model store, then a bento."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bentoml

from cxr.core.calibration import NO_TEMPERATURE
from cxr.core.config import REPO_ROOT, Settings
from cxr.core.model_store import save_model

BENTOFILE = REPO_ROOT / "bentofile.yaml"
MODEL_TAG_ENV = "CXR_SERVE__MODEL_TAG"


def serving_info(settings: Settings, temperature: float = NO_TEMPERATURE) -> dict[str, Any]:
    """What the service needs to reproduce training's preprocessing and decision (the
    cut-off applies to P(COVID) calibrated with ``temperature``)."""
    return {
        "architecture": settings.gate.model,
        "image_size": settings.preprocess.image_size,
        "cutoff": settings.decision.cutoff,
        "temperature": temperature,
        "classes": list(settings.data.classes),
        "preprocessing": "cxr.core.preprocessing.preprocess_image: /255, resize, gray->3",
    }


def calibrated_temperature(result: dict[str, Any]) -> float:
    """The temperature a model's evaluation fitted (1.0 when calibration was off)."""
    return float(result.get("calibration", {}).get("temperature", NO_TEMPERATURE))


def model_metadata(
    results: dict[str, dict], run_info: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """Metrics of every model, the config, the dataset fingerprint, run id, git commit."""
    gated = results[settings.gate.model]
    return {
        **{k: v for k, v in run_info.items() if k != "devices"},
        "backend": run_info.get("devices", {}).get("backend"),
        "test_metrics": {k: v for k, v in gated["test"].items() if k != "confusion"},
        "confusion": gated["test"]["confusion"],
        "best_epoch": gated["best_epoch"],
        "calibration": gated.get("calibration"),  # temperature, ECE before/after scaling
        "all_models_test_accuracy": {name: r["test"]["accuracy"] for name, r in results.items()},
        "config": settings.model_dump(mode="json"),
    }


def build_bento(model_tag: str) -> str:
    """Build the bento from ``bentofile.yaml`` pinned to ``model_tag``; return its tag."""
    previous = os.environ.get(MODEL_TAG_ENV)
    os.environ[MODEL_TAG_ENV] = model_tag
    try:
        # reload: a process that built a bento before (the flow, a test session) has the
        # service module imported with that build's model tag
        bento = bentoml.bentos.build_bentofile(
            str(BENTOFILE), build_ctx=str(REPO_ROOT), reload=True
        )
    finally:
        if previous is None:
            os.environ.pop(MODEL_TAG_ENV, None)
        else:
            os.environ[MODEL_TAG_ENV] = previous
    return str(bento.tag)


def package(
    checkpoint: Path,
    extra_files: list[Path],
    results: dict[str, dict],
    run_info: dict[str, Any],
    settings: Settings,
) -> dict[str, str | None]:
    """Save the gated model and its extra files (monitoring reference, OOD detector) to
    the store (and build the bento when configured)."""
    tag = save_model(
        settings.packaging.model_name,
        checkpoint,
        serving_info(settings, calibrated_temperature(results[settings.gate.model])),
        model_metadata(results, run_info, settings),
        extra_files=extra_files,
    )
    bento = build_bento(tag) if settings.packaging.build_bento else None
    return {"model_tag": tag, "bento_tag": bento}
