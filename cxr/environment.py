"""Environment defaults for every entry point (the ``cxr`` command and the benchmarks),
set before TensorFlow, Prefect, BentoML or Great Expectations is imported."""

from __future__ import annotations

import os

DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    # Prefect gives its temporary server 20 s to start; creating its database on a first
    # start on a new 2-core machine takes longer ("Timed out ... ephemeral Prefect API").
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
}


def apply_defaults() -> None:
    """Set each default the environment does not already set."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
