"""Which stored model is in production: the promotion record of a model name.

BentoML 1.4 cannot change a stored model's labels after it is saved, so promotions are
kept in a small record beside the model's versions in the BentoML store:
``$BENTOML_HOME/models/<name>/promotions.jsonl``, one JSON object a line, rewritten
atomically (and under a file lock) on every change. ``name:production`` resolves to the
model of the last promotion that was not rolled back. A store with no record for the
name (a built bento's own store, which holds the one model it was built around, or a
store from before promotions existed) serves ``name:latest``.

Imported by the service: no Prefect, no training code.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml

from cxr.core.errors import DataInputError

PRODUCTION = "production"
RECORD_FILE = "promotions.jsonl"
PROMOTE, ROLLBACK = "promote", "rollback"


def split_tag(tag: str) -> tuple[str, str]:
    """``name:version`` -> (name, version); a bare name has version ``latest``."""
    name, _, version = str(tag).partition(":")
    return name, version or "latest"


def _name_folder(name: str) -> Path:
    """The store folder of a model name (parent of its versions), or a clear error."""
    try:
        stored = bentoml.models.get(f"{name}:latest")
    except bentoml.exceptions.NotFound as error:
        raise DataInputError(
            f"no model named {name!r} in the BentoML store; train one with `cxr train`"
        ) from error
    return Path(stored.path).parent


def record_path(name: str) -> Path:
    """``<store>/models/<name>/promotions.jsonl`` (it may not exist yet)."""
    return _name_folder(name) / RECORD_FILE


def read_record(name: str) -> list[dict[str, Any]]:
    """Every promotion and rollback of ``name``, oldest first ([] without a record)."""
    path = record_path(name)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def production_history(entries: list[dict[str, Any]]) -> list[str]:
    """The stack of production tags the record leaves: a promotion pushes its tag, a
    rollback pops the top; the last element is in production."""
    stack: list[str] = []
    for entry in entries:
        if entry["action"] == PROMOTE:
            stack.append(entry["tag"])
        elif entry["action"] == ROLLBACK and stack:
            stack.pop()
    return stack


def current_production(name: str) -> str | None:
    """The tag in production according to the record; None when nothing was promoted."""
    stack = production_history(read_record(name))
    return stack[-1] if stack else None


def production_tag(name: str) -> str:
    """The explicit tag ``name:production`` stands for: the recorded production model,
    or the latest model of a store without a record."""
    recorded = current_production(name)
    if recorded is None:
        return str(bentoml.models.get(f"{name}:latest").tag)
    try:
        bentoml.models.get(recorded)
    except bentoml.exceptions.NotFound as error:
        raise DataInputError(
            f"production model {recorded} (see {record_path(name)}) is not in the BentoML "
            f"store any more; promote another with `cxr promote TAG` or `cxr rollback`"
        ) from error
    return recorded


def _has_models(name: str) -> bool:
    try:
        bentoml.models.get(f"{name}:latest")
    except bentoml.exceptions.NotFound:
        return False
    return True


def resolve_tag(tag: str) -> str:
    """``name:production`` -> the explicit production tag; any other tag, or a name the
    store has no model of (BentoML then says it is not found), unchanged."""
    name, version = split_tag(tag)
    return production_tag(name) if version == PRODUCTION and _has_models(name) else tag


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the record of one model name (one writer at a time)."""
    with open(folder / f"{RECORD_FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_entry(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Add one entry (stamped with the UTC time) to the record, atomically: the whole
    record is written to a temporary file in the same folder and renamed over the old."""
    folder = _name_folder(name)
    entry = {"time": datetime.now(UTC).isoformat(timespec="seconds"), **entry}
    with _locked(folder):
        path = folder / RECORD_FILE
        old = path.read_text() if path.is_file() else ""
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{RECORD_FILE}.")
        with os.fdopen(handle, "w") as out:
            out.write(old + json.dumps(entry, default=str) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    return entry


def bento_model_tag(service_file: Path) -> str | None:
    """The model a built bento was built around, when ``service_file`` is the service
    module inside a bento (``<bento>/src/service.py`` beside ``<bento>/bento.yaml``);
    None in a source checkout. A bento serves its own model, on this machine and in a
    container, whatever is in production."""
    manifest = Path(service_file).resolve().parent.parent / "bento.yaml"
    if not manifest.is_file():
        return None
    import yaml

    info = yaml.safe_load(manifest.read_text()) or {}
    for service in info.get("services") or []:
        for model in service.get("models") or []:
            if model.get("tag"):
                return str(model["tag"])
    return None
