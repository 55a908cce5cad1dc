"""Serving scale settings reach the service's ``@bentoml.service`` decorators and the
model runner's TensorFlow thread pools."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cxr.core.config import load_settings
from cxr.serve.batching import LocalModel
from cxr.serve.scale import front_model_threads, model_resources

REPO = Path(__file__).resolve().parents[2]
SHOW_CONFIG = (
    "import json, service; "
    "print(json.dumps({'front': service.XRayClassifier.config, "
    "'model': service.ModelRunner.config}))"
)


def _service_config(tmp_path: Path, settings: dict[str, str]) -> dict[str, dict]:
    """The two services' BentoML config after a fresh import of service.py with
    ``settings`` in the environment (the module reads its settings at import)."""
    env = {"BENTOML_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **settings}
    done = subprocess.run(
        [sys.executable, "-c", SHOW_CONFIG], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_by_default_each_service_runs_one_worker_with_bentoml_default_resources(
    tmp_path: Path,
) -> None:
    config = _service_config(tmp_path, {})
    assert config["front"]["workers"] == 1 and config["model"]["workers"] == 1
    assert config["model"].get("resources", {}) == {}
    assert config["front"]["http"]["host"] == "127.0.0.1"  # the loopback rule still holds


def test_workers_threads_and_gpus_come_from_the_configuration(tmp_path: Path) -> None:
    config = _service_config(
        tmp_path,
        {
            "CXR_SERVE__FRONT_WORKERS": "3",
            "CXR_SERVE__MODEL_WORKERS": "2",
            "CXR_SERVE__MODEL_THREADS": "4",
            "CXR_SERVE__MODEL_GPUS": "1",
        },
    )
    assert config["front"]["workers"] == 3
    assert config["model"]["workers"] == 2
    assert config["model"]["resources"] == {"cpu": "4", "gpu": 1}
    assert "resources" not in config["front"]  # the front holds no model


@pytest.mark.parametrize("key", ["FRONT_WORKERS", "MODEL_WORKERS", "MODEL_THREADS"])
def test_a_worker_or_thread_count_below_one_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match=key.lower()):
        load_settings(environ={f"CXR_SERVE__{key}": "0"})


def test_without_gpus_or_threads_the_model_runner_asks_for_nothing() -> None:
    assert model_resources(load_settings(environ={}).serve) == {}


@pytest.mark.parametrize(
    ("call", "pools"),
    [("limit_threads(2)", ["2", "1"]),  # a model runner: one batch at a time
     ("limit_threads(1, 2)", ["1", "2"])],  # a front with two batches in flight
)  # fmt: skip
def test_the_model_process_sizes_tensorflow_thread_pools_before_its_first_operation(
    call: str, pools: list[str]
) -> None:
    code = (
        f"import tensorflow as tf; from cxr.serve.scale import limit_threads; "
        f"{call}; tf.constant(1.0) + 1; "
        "print(tf.config.threading.get_intra_op_parallelism_threads(), "
        "tf.config.threading.get_inter_op_parallelism_threads())"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == pools


def test_a_front_shares_its_cores_among_the_batches_in_flight() -> None:
    serve = load_settings(environ={}).serve
    assert serve.batches_in_flight == 2
    assert front_model_threads(serve, cores=2) == 1
    assert front_model_threads(serve, cores=16) == 8
    assert front_model_threads(serve, cores=1) == 1
    one = load_settings(environ={"CXR_SERVE__BATCHES_IN_FLIGHT": "1"}).serve
    assert front_model_threads(one, cores=16) is None  # TensorFlow's default: every core
    pinned = load_settings(environ={"CXR_SERVE__MODEL_THREADS": "3"}).serve
    assert front_model_threads(pinned, cores=16) == 3
    with pytest.raises(ValueError, match="batches_in_flight"):
        load_settings(environ={"CXR_SERVE__BATCHES_IN_FLIGHT": "0"})


@pytest.mark.parametrize("in_flight", [1, 2])
def test_the_front_model_runs_at_most_batches_in_flight_batches_at_once(in_flight: int) -> None:
    running, most, lock = [0], [0], threading.Lock()

    def rows(batch: np.ndarray) -> np.ndarray:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return batch[:, :1] * 2.0

    async def send_all() -> list[np.ndarray]:
        model = LocalModel(rows, False, 8, 20_000, "test", in_flight)
        return await asyncio.gather(*(model(np.full((1, 3), float(i))) for i in range(6)))

    answers = asyncio.run(send_all())
    assert [float(a[0, 0]) for a in answers] == [2.0 * i for i in range(6)]
    assert most[0] == in_flight
