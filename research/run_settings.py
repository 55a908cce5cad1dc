"""The settings that shape a run's numbers: flattened, fingerprinted, compared with a
built-in profile as it is now (``cxr results`` keeps runs of other settings apart)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import ValidationError

from cxr.core.config import Settings, available_profiles, load_settings

RESULT_SECTIONS = ("data", "preprocess", "model", "train", "gate")
NOT_RESULTS = ("train.seed", "train.verbose")  # vary between runs of one variant


def result_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that shape a run's numbers, flattened to dotted keys; settings added
    since the run was made take their default (what the code did then)."""
    try:
        config = Settings.model_validate(config).model_dump(mode="json")
    except ValidationError:  # a setting since removed: compare the folder as written
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
