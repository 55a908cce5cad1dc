"""Shared fixtures. Stores (BentoML, Prefect) live in a temporary folder per session, and
real images come from ``../shared/data`` or ``$CXR_SHARED_DATA`` (linked into temporary
datasets, never copied into the repository).

Tests that read real images are marked ``real_data``. Without the data they skip with a
reason; with ``CI=true`` the run fails instead (at collection for marked tests, and in
``real_images`` for any test that reads images unmarked), so a CI job that lost its data
cannot pass on skipped tests."""

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
REPO = Path(__file__).resolve().parent.parent
# read before the CXR_ settings are cleared (tests must not see a developer's CXR_* env)
SHARED_DATA = Path(os.environ.get("CXR_SHARED_DATA") or REPO.parent / "shared" / "data")
for _key in [k for k in os.environ if k.startswith("CXR_")]:
    del os.environ[_key]
os.environ["CXR_MONITOR__REPORTS_DIR"] = str(_HOME / "monitoring-reports")  # not the repo's
os.environ["CXR_MONITOR__WORKSPACE_DIR"] = str(_HOME / "monitoring-workspace")

import pytest  # noqa: E402

pytest_plugins = ["tests.pg"]  # postgres_server, postgres_url: a throwaway PostgreSQL

RELEASE = SHARED_DATA / "COVID-19_Radiography_Dataset"
TUBERCULOSIS = SHARED_DATA / "TB_Chest_Radiography_Database" / "Tuberculosis"
IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _missing_data_message() -> str:
    return f"real data not found at {RELEASE} (set CXR_SHARED_DATA to the folder holding it)"


def real_images(label: str, n: int, offset: int = 0) -> list[Path]:
    """n real images of one class from the shared sample, in a fixed order."""
    if not RELEASE.is_dir():
        if IN_CI:
            pytest.fail(f"CI=true but {_missing_data_message()}", pytrace=False)
        pytest.skip(_missing_data_message())
    paths = sorted((RELEASE / label / "images").glob("*.png"))
    return paths[offset : offset + n]


def pytest_collection_finish(session: pytest.Session) -> None:
    """With CI=true, a run that selected real-data tests stops at once when the data is
    missing (a skipped suite must not pass as a green CI job)."""
    if not IN_CI or RELEASE.is_dir():
        return
    needing = [item.nodeid for item in session.items if item.get_closest_marker("real_data")]
    if needing:
        more = f" and {len(needing) - 3} more" if len(needing) > 3 else ""
        pytest.exit(
            f"CI=true but {_missing_data_message()}; {len(needing)} selected tests need it "
            f"({', '.join(needing[:3])}{more})",
            returncode=pytest.ExitCode.TESTS_FAILED,
        )


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
def packaging_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 COVID + 20 Normal real radiographs (release layout) that the packaged test
    models are trained on."""
    return link_dataset(
        tmp_path_factory.mktemp("packaged"),
        {"COVID": real_images("COVID", 20), "Normal": real_images("Normal", 20)},
    )


def _train_and_package(
    architecture: str, image_size: int, epochs: int, dataset: Path, folder: Path
) -> str:
    """Train ``architecture`` briefly (random init, seed 0) on ``dataset`` the way the
    flow does (``build_model``, ``load_arrays``) and save it to the test store with its
    serving info and monitoring reference, without running the flow; return the tag."""
    import keras
    import numpy as np

    from cxr.core.config import load_settings
    from cxr.core.model_store import save_model
    from cxr.data.dataset import load_arrays
    from cxr.data.ingestion import ingest
    from cxr.monitor.reference import build_reference
    from cxr.train.models import build_model
    from cxr.train.packaging import serving_info

    overrides = {"gate.model": architecture, "data.samples_per_class": None}
    overrides["preprocess.image_size"] = image_size
    settings = load_settings("demo", overrides=overrides, environ={})
    images = ingest(dataset, settings.data, seed=0)
    paths, labels = images["path"].tolist(), images["label_index"].tolist()
    arrays = load_arrays(paths, labels, image_size)
    keras.utils.set_random_seed(0)
    model = build_model(architecture, image_size, settings.model, settings.train)
    model.fit(arrays.x, arrays.y, epochs=epochs, batch_size=8, verbose=0)
    checkpoint = folder / f"{architecture}.keras"
    model.save(checkpoint)
    probabilities = model.predict(arrays.x, verbose=0).reshape(-1)
    assert np.isfinite(probabilities).all()
    predictions = images[["path", "label_index"]].assign(covid_probability=probabilities)
    reference = build_reference(images, predictions, settings.data.classes, 0.5)
    reference.to_csv(folder / "reference.csv", index=False)
    return save_model(
        f"cxr-test-{architecture.replace('_', '-')}",
        checkpoint,
        serving_info(settings),
        {"run_id": "test", "synthetic": False},
        extra_files=[folder / "reference.csv"],
    )


@pytest.fixture(scope="session")
def packaged_model(packaging_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real LSTM baseline (64 px, 2 epochs) packaged in the test store with its
    monitoring reference: the model the service and monitoring tests serve."""
    return _train_and_package("lstm", 64, 2, packaging_dataset, tmp_path_factory.mktemp("lstm"))


@pytest.fixture(scope="session")
def packaged_hybrid(packaging_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The gated architecture, ResNet50-LSTM (64 px, random init, 1 epoch), packaged in
    the test store like :func:`packaged_model`."""
    folder = tmp_path_factory.mktemp("hybrid")
    return _train_and_package("resnet50_lstm", 64, 1, packaging_dataset, folder)


@pytest.fixture(scope="session")
def hybrid_bento(packaged_hybrid: str) -> str:
    """The bento built from ``bentofile.yaml`` around :func:`packaged_hybrid`; its tag."""
    from cxr.train.packaging import build_bento

    return build_bento(packaged_hybrid)
