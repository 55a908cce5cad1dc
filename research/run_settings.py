"""The settings that shape a run's numbers: flattened, fingerprinted, compared with a
built-in profile as it is now (the cross-run report keeps runs of other settings apart).

A run's ``config.json`` is read under today's names: a setting renamed since the run
(``cxr.core.config.RENAMED``) is moved to its new name, and one removed since
(``cxr.core.config.REMOVED``) is dropped, so records of older runs stay comparable."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from pydantic import ValidationError

from cxr.core.config import REMOVED, RENAMED, Settings, available_profiles, load_settings

RESULT_SECTIONS = ("data", "preprocess", "model", "train", "gate", "decision")
NOT_RESULTS = ("train.seed", "train.verbose")  # vary between runs of one variant
_MISSING = object()


def _pop(values: dict[str, Any], dotted: str) -> Any:
    """Remove a dotted key from a nested mapping; its value, or ``_MISSING``."""
    *parents, last = dotted.split(".")
    for key in parents:
        values = values.get(key)
        if not isinstance(values, dict):
            return _MISSING
    return values.pop(last, _MISSING)


def current_names(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config under today's setting names, without the settings removed since."""
    config = copy.deepcopy(config)
    for old, new in RENAMED.items():
        value = _pop(config, old)
        if value is not _MISSING:
            *parents, last = new.split(".")
            target = config
            for key in parents:
                target = target.setdefault(key, {})
            target.setdefault(last, value)
    for name in REMOVED:
        _pop(config, name)
    return config


def result_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that shape a run's numbers, flattened to dotted keys; settings added
    since the run was made take their default (what the code did then)."""
    config = current_names(config)
    try:
        config = Settings.model_validate(config).model_dump(mode="json")
    except ValidationError:  # a setting unknown to this version: compare as written
        pass
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif prefix not in NOT_RESULTS:
            flat[prefix] = value

    walk("", {k: config.get(k) for k in RESULT_SECTIONS})
    return flat


def settings_fingerprint(config: dict[str, Any]) -> str:
    """Six hex digits naming a run's result-shaping settings."""
    text = json.dumps(result_settings(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def current_fingerprint(profile: str) -> str | None:
    """The fingerprint of a built-in profile as it is now (None for unknown ones)."""
    config = profile_config(profile)
    return None if config is None else settings_fingerprint(config)


def profile_config(profile: str) -> dict[str, Any] | None:
    """A built-in profile's settings as they are now (None for unknown profiles)."""
    if profile not in available_profiles():
        return None
    return load_settings(profile, environ={}).model_dump(mode="json")
