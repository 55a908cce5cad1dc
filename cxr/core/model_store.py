"""Packaged models in the BentoML model store: save and load.

Imported by the service (no Prefect, no training code). Keras is imported only when a
model is loaded, so the HTTP front of the service never loads TensorFlow.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml

from cxr.core.calibration import NO_TEMPERATURE
from cxr.core.errors import DataInputError
from cxr.core.ood import DETECTOR_FILE, OODDetector, load_detector
from cxr.core.production import resolve_tag

if TYPE_CHECKING:
    import keras

MODEL_FILE = "model.keras"
INFO_FILE = "serving.json"


@dataclass
class PackagedModel:
    """A model loaded from the store with what is needed to serve it."""

    tag: str
    model: keras.Model
    image_size: int
    cutoff: float  # COVID when P(COVID) >= cutoff
    classes: list[str]
    metadata: dict[str, Any]
    path: Path
    detector: OODDetector | None = None  # the out-of-distribution check (None: packaged before it)
    temperature: float = NO_TEMPERATURE  # calibrated P(COVID) = sigmoid(logit(p) / temperature)


def _storable(value: Any) -> Any:
    """BentoML metadata takes basic types only: drop None entries, stringify paths."""
    if isinstance(value, dict):
        return {str(k): _storable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value if v is not None]
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def save_model(
    name: str,
    checkpoint: Path,
    serving: dict[str, Any],
    metadata: dict[str, Any],
    extra_files: list[Path] = (),
) -> str:
    """Copy a ``.keras`` checkpoint (and extra files, e.g. the monitoring reference) into
    the store with its serving info; return the tag."""
    labels = {"model": str(serving["architecture"]), "run_id": str(metadata.get("run_id", ""))}
    with bentoml.models.create(name, metadata=_storable(metadata), labels=labels) as stored:
        shutil.copyfile(checkpoint, stored.path_of(MODEL_FILE))
        Path(stored.path_of(INFO_FILE)).write_text(json.dumps(serving, indent=2))
        for extra in extra_files:
            shutil.copyfile(extra, stored.path_of(Path(extra).name))
    return str(stored.tag)


def get_stored(tag: str) -> bentoml.Model:
    """The stored model entry for a tag (``name:production``: see
    :mod:`cxr.core.production`), or a clear error."""
    try:
        return bentoml.models.get(resolve_tag(tag))
    except bentoml.exceptions.NotFound as error:
        raise DataInputError(f"model {tag!r} not found in the BentoML store") from error


def _refuse_equalized(equalized: bool, what: str) -> None:
    """Models trained on histogram-equalised films (an option that was removed) would get
    the wrong input from today's preprocessing: refuse them instead of answering wrongly."""
    if equalized:
        raise DataInputError(
            f"{what} was trained on histogram-equalised images, which this version no longer "
            "produces; retrain it"
        )


def read_serving_info(stored: bentoml.Model) -> dict[str, Any]:
    """Image size, P(COVID) cut-off, temperature, classes and architecture of a stored
    model. Models packaged by earlier versions store the cut-off as ``decision_threshold``
    and have no temperature (1.0: uncalibrated)."""
    info = json.loads(Path(stored.path_of(INFO_FILE)).read_text())
    _refuse_equalized(bool(info.pop("equalize", False)), f"model {stored.tag}")
    if "cutoff" not in info:
        info["cutoff"] = info.pop("decision_threshold")
    info.setdefault("temperature", NO_TEMPERATURE)
    return info


def load_model(tag: str) -> PackagedModel:
    """Load a packaged model by tag (``name:version`` or ``name:latest``)."""
    import keras

    stored = get_stored(tag)
    serving = read_serving_info(stored)
    return PackagedModel(
        tag=str(stored.tag),
        model=keras.saving.load_model(stored.path_of(MODEL_FILE)),
        image_size=int(serving["image_size"]),
        cutoff=float(serving["cutoff"]),
        classes=list(serving["classes"]),
        metadata=dict(stored.info.metadata),
        path=Path(stored.path),
        detector=load_detector(Path(stored.path_of(DETECTOR_FILE))),
        temperature=float(serving["temperature"]),
    )


def load_checkpoint(path: Path) -> PackagedModel:
    """A checkpoint of a run (``<run>/models/<name>.keras``) with the image size and
    classes of that run's ``config.json`` and the cut-off and temperature the run
    evaluated it with (``metrics.json``) — for models the gate did not ship. Runs of
    earlier versions keep the cut-off in ``gate.decision_threshold`` and have no
    temperature (1.0)."""
    import keras

    path = Path(path)
    config_file = path.parent.parent / "config.json"
    if not path.is_file():
        raise DataInputError(f"checkpoint not found: {path}")
    if not config_file.is_file():
        raise DataInputError(f"{path} is not a checkpoint inside a run folder with config.json")
    config = json.loads(config_file.read_text())
    _refuse_equalized(bool(config["preprocess"].get("equalize", False)), str(path))
    decision = config.get("decision") or {"cutoff": config["gate"]["decision_threshold"]}
    cutoff, temperature = float(decision["cutoff"]), NO_TEMPERATURE
    metrics_file = path.parent.parent / "metrics.json"
    if metrics_file.is_file():  # the cut-off the run evaluated this model with
        evaluated = json.loads(metrics_file.read_text()).get("models", {}).get(path.stem, {})
        cutoff = float(evaluated.get("test", {}).get("threshold", cutoff))
        temperature = float(evaluated.get("calibration", {}).get("temperature", temperature))
    try:
        model = keras.saving.load_model(path)
    except (OSError, ValueError) as error:
        raise DataInputError(f"cannot load checkpoint {path}: {error}") from error
    return PackagedModel(
        tag=str(path),
        model=model,
        image_size=int(config["preprocess"]["image_size"]),
        cutoff=cutoff,
        classes=list(config["data"]["classes"]),
        metadata={"run_dir": str(path.parent.parent)},
        path=path,
        detector=load_detector(path.parent.parent / "ood" / path.stem / DETECTOR_FILE),
        temperature=temperature,
    )


def load_any(reference: str) -> PackagedModel:
    """A packaged model by tag, or a run checkpoint by its ``.keras`` path."""
    if reference.endswith(".keras"):
        return load_checkpoint(Path(reference))
    return load_model(reference)
