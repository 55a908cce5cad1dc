"""Environment defaults for every entry point (the ``cxr`` command and the benchmarks),
set before TensorFlow, Prefect, BentoML or Great Expectations is imported."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    # Prefect gives its temporary server 20 s to start; creating its database on a first
    # start on a new 2-core machine takes longer ("Timed out ... ephemeral Prefect API").
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
}


# folders a user may point at a new place; Prefect creates its home without parents and,
# failing, starts a temporary server that cannot open its database until the timeout
HOMES = ("PREFECT_HOME", "BENTOML_HOME")


def apply_defaults() -> None:
    """Set each default the environment does not already set, and create the Prefect and
    BentoML homes it names (with their parents) where they do not exist yet."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    for key in HOMES:
        if folder := os.environ.get(key):
            try:
                Path(folder).expanduser().mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise SystemExit(f"{key}={folder}: cannot create that folder ({error})") from error
