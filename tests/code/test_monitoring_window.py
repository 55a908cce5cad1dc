"""Which model the monitor compares: the one the running service logged."""

from __future__ import annotations

import pandas as pd

from cxr.monitor.check import served_tag


def test_latest_follows_what_the_service_logged() -> None:
    window = pd.DataFrame({"model_tag": ["cxr:v1", "other:v9", "cxr:v2", "other:v8"]})
    assert served_tag("cxr:latest", window) == "cxr:v2"
    assert served_tag("cxr", window) == "cxr:v2"
    assert served_tag("cxr:production", window) == "cxr:v2"  # what runs, until a restart
    assert served_tag("cxr:v1", window) == "cxr:v1"
    assert served_tag("cxr:latest", window.iloc[:0]) == "cxr:latest"
