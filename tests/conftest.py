"""Shared fixtures. Stores (BentoML, Prefect) live in a temporary folder per session, and
real images come from ``../shared/data`` (linked into temporary datasets, never copied
into the repository)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="cxr-tests-"))
os.environ["BENTOML_HOME"] = str(_HOME / "bentoml")
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
for _key in [k for k in os.environ if k.startswith("CXR_")]:
    del os.environ[_key]

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))
RELEASE = SHARED_DATA / "COVID-19_Radiography_Dataset"
TUBERCULOSIS = SHARED_DATA / "TB_Chest_Radiography_Database" / "Tuberculosis"


def real_images(label: str, n: int, offset: int = 0) -> list[Path]:
    """n real images of one class from the shared sample, in a fixed order."""
    if not RELEASE.is_dir():
        pytest.skip(f"real data not found at {RELEASE} (it exists in this project's CI)")
    paths = sorted((RELEASE / label / "images").glob("*.png"))
    return paths[offset : offset + n]


def link_dataset(root: Path, per_class: dict[str, list[Path]]) -> Path:
    """A release-layout dataset under ``root`` made of symlinks to real images."""
    for label, paths in per_class.items():
        folder = root / "COVID-19_Radiography_Dataset" / label / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            (folder / path.name).symlink_to(path)
    return root / "COVID-19_Radiography_Dataset"


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """One temporary Prefect API for the whole session; returns its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


def last_json(stdout: str) -> dict:
    """The JSON document a ``cxr`` command prints last (logs may come before it)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def run_cli(*args: str, api_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``cxr`` command in a subprocess (stdout and stderr as text)."""
    env = dict(os.environ)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return subprocess.run(
        [sys.executable, "-m", "cxr.cli", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=1200,
    )  # fmt: skip


@pytest.fixture
def small_real_dataset(tmp_path: Path) -> Path:
    """30 COVID + 30 Normal real radiographs in the release layout."""
    return link_dataset(
        tmp_path, {"COVID": real_images("COVID", 30), "Normal": real_images("Normal", 30)}
    )


@pytest.fixture(scope="session")
def packaged_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real (LSTM baseline, 64 px, histogram-equalised input, briefly trained) model
    packaged in the test store with its monitoring reference, without running the flow."""
    import keras
    import numpy as np

    from cxr.core.config import load_settings
    from cxr.core.model_store import save_model
    from cxr.data.dataset import load_arrays
    from cxr.data.ingestion import ingest
    from cxr.monitor.reference import build_reference
    from cxr.train.models import build_model
    from cxr.train.packaging import serving_info

    root = link_dataset(
        tmp_path_factory.mktemp("packaged"),
        {"COVID": real_images("COVID", 20), "Normal": real_images("Normal", 20)},
    )
    settings = load_settings(
        "demo",
        overrides={
            "gate.model": "lstm",
            "data.samples_per_class": None,
            "preprocess.image_size": 64,
            "preprocess.equalize": True,
        },
        environ={},
    )
    images = ingest(root, settings.data, seed=0)
    paths, labels = images["path"].tolist(), images["label_index"].tolist()
    arrays = load_arrays(paths, labels, 64, equalize=True)
    keras.utils.set_random_seed(0)
    model = build_model("lstm", 64, settings.model, settings.train)
    model.fit(arrays.x, arrays.y, epochs=2, batch_size=8, verbose=0)
    folder = tmp_path_factory.mktemp("model")
    model.save(folder / "lstm.keras")
    probabilities = model.predict(arrays.x, verbose=0).reshape(-1)
    predictions = images[["path", "label_index"]].assign(covid_probability=probabilities)
    reference = build_reference(images, predictions, settings.data.classes, 0.5)
    reference.to_csv(folder / "reference.csv", index=False)
    assert np.isfinite(probabilities).all()
    return save_model(
        "cxr-test-model",
        folder / "lstm.keras",
        serving_info(settings),
        {"run_id": "test", "synthetic": False},
        extra_files=[folder / "reference.csv"],
    )
