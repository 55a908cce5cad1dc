"""CI cannot pass on skipped tests: with ``CI=true`` missing real data fails the run.

The checks run pytest in a subprocess on the one small real-data test of this file, with
``CXR_SHARED_DATA`` pointing at a folder that does not exist, or at a tiny stand-in."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.core.preprocessing import decode_grayscale
from tests.conftest import REPO, real_images

REAL_DATA_TEST = "tests/code/test_ci_data.py::test_a_shared_radiograph_decodes"
CODE_TEST = "tests/code/test_preprocessing.py::test_decompression_bomb_is_refused"


@pytest.mark.real_data
def test_a_shared_radiograph_decodes() -> None:
    """The smallest real-data test: one shared radiograph decodes to 8-bit grey."""
    (path,) = real_images("COVID", 1)
    gray, _ = decode_grayscale(path.read_bytes())
    assert gray.dtype == np.uint8 and gray.ndim == 2 and min(gray.shape) >= 64


def _pytest(shared_data: Path, ci: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CI"))}
    env["CXR_SHARED_DATA"] = str(shared_data)
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


@pytest.mark.parametrize("ci", ["true", "1", "YES"])
def test_ci_fails_when_the_shared_data_is_missing(ci: str, tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    result = _pytest(missing, ci, REAL_DATA_TEST, CODE_TEST)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"CI=true but real data not found at {missing}" in output, output
    assert "1 selected tests need it" in output and REAL_DATA_TEST in output, output
    assert " passed" not in output  # stopped before running anything


def test_outside_ci_missing_data_skips_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    result = _pytest(missing, None, REAL_DATA_TEST)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 skipped" in output and f"real data not found at {missing}" in output, output


def test_ci_without_data_runs_the_fast_lane(tmp_path: Path) -> None:
    """``-m "not real_data"`` deselects the tests that need the data: nothing to fail."""
    missing = tmp_path / "nonexistent"
    result = _pytest(missing, "true", "-m", "not real_data", REAL_DATA_TEST, CODE_TEST)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed, 1 deselected" in output, output


def test_cxr_shared_data_points_the_tests_at_another_folder(tmp_path: Path) -> None:
    """The documented override: ``CXR_SHARED_DATA`` is read before the other ``CXR_*``
    variables are cleared (a stand-in radiograph here, so this runs without the data)."""
    images = tmp_path / "COVID-19_Radiography_Dataset" / "COVID" / "images"
    images.mkdir(parents=True)
    ramp = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (128, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    (images / "COVID-1.png").write_bytes(buffer.getvalue())
    result = _pytest(tmp_path, "true", REAL_DATA_TEST)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "1 passed" in output, output
