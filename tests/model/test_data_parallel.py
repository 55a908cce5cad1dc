"""Data-parallel training: on two forced host CPU devices under JAX (what several GPUs
look like to Keras), ``train_model`` shards each global batch across both and gets the
losses of a one-device run, within floating-point reordering.

The backend and the device count are fixed when JAX and Keras are imported, so each run
is its own process (``python -c`` of the script below)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxr.core.config import load_settings
from cxr.core.errors import ConfigError
from cxr.train.devices import TrainingDevices, even_length, plan_training_devices
from tests.conftest import REPO

pytestmark = pytest.mark.slow

# A tiny model and data: the lstm baseline at 32 px, 2 epochs of 12 + 4 images, batch 4;
# and a ResNet50 for one step, whose training loss (batch norm in training mode) is the
# one-device loss only if the batch statistics are those of the global batch. Later
# ResNet50 steps are not compared: Adam moves every weight by about the learning rate in
# the direction of its gradient's sign, and the signs of the near-zero gradients of a
# random-init ResNet50 follow the floating-point order, so two runs part after one step
# (the second step's loss differed by 3-60% at learning rates 1e-5 to 1e-3).
SCRIPT = """
import json, os, sys
if os.environ.get("SPLIT_TF_CPU"):  # TensorFlow: the CPU as two logical devices
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pathlib import Path
import numpy as np
from cxr.core.config import load_settings
from cxr.data.dataset import Arrays
from cxr.train.training import train_model

name, out = sys.argv[1], Path(sys.argv[2])
n_train, n_val, epochs = (int(a) for a in sys.argv[3:6])
settings = load_settings("demo", overrides={
    "preprocess.image_size": 32, "preprocess.batch_size": 4, "train.epochs": epochs,
    "train.verbose": 0, "train.models": [name], "gate.model": name,
    "train.hybrid_backbone_from_baseline": False,
}, environ={})
rng = np.random.default_rng(0)
def arrays(n):
    gray = rng.random((n, 32, 32, 1), dtype=np.float32)
    y = (gray.mean(axis=(1, 2, 3)) > 0.5).astype("float32")
    return Arrays(np.repeat(gray, 3, axis=-1), y, [f"{i}.png" for i in range(n)])
train, val = arrays(n_train), arrays(n_val)
trained = train_model(name, train, val, settings, out / "models")
probe = np.asarray(trained.model.predict(val.x, verbose=0)).ravel().tolist()
out.joinpath("result.json").write_text(json.dumps(
    {"history": trained.history, "devices": trained.devices, "predictions": probe}))
"""


def _train(
    name: str, devices: int, out: Path, n_train: int, n_val: int, epochs: int, backend: str = "jax"
) -> dict:
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    if backend == "tensorflow" and devices == 2:
        env["SPLIT_TF_CPU"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, name, str(out), str(n_train), str(n_val), str(epochs)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_two_devices_give_the_losses_of_one(tmp_path: Path) -> None:
    one = _train("lstm", 1, tmp_path / "one", n_train=12, n_val=4, epochs=2)
    two = _train("lstm", 2, tmp_path / "two", n_train=12, n_val=4, epochs=2)
    assert one["devices"]["mechanism"] == "single_device"
    assert one["devices"]["devices"] == ["cpu:0"]
    assert two["devices"] == {
        "backend": "jax",
        "devices": ["cpu:0", "cpu:1"],
        "mechanism": "keras.distribution.DataParallel",
        "global_batch": 4,
        "per_device_batch": 2,
        "images_left_out": {"train": 0, "val": 0},
    }
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert len(two["history"][key]) == 2, key
        np.testing.assert_allclose(two["history"][key], one["history"][key], rtol=1e-4, atol=1e-5)
    assert two["history"]["loss"][0] != pytest.approx(two["history"]["loss"][1])  # it learns
    # the restored checkpoint is an ordinary model: it predicts any batch size on one device
    np.testing.assert_allclose(two["predictions"], one["predictions"], rtol=1e-4, atol=1e-5)


def test_resnet50_batch_norm_sees_the_global_batch(tmp_path: Path) -> None:
    """With per-device batch statistics (TensorFlow's MirroredStrategy) this loss was 41%
    away from the one-device loss."""
    one = _train("resnet50", 1, tmp_path / "one", n_train=4, n_val=4, epochs=1)
    two = _train("resnet50", 2, tmp_path / "two", n_train=4, n_val=4, epochs=1)
    assert two["devices"]["per_device_batch"] == 2
    np.testing.assert_allclose(two["history"]["loss"], one["history"]["loss"], rtol=1e-3)


def test_odd_splits_lose_at_most_one_image_per_device(tmp_path: Path) -> None:
    two = _train("lstm", 2, tmp_path / "two", n_train=13, n_val=5, epochs=1)
    assert two["devices"]["images_left_out"] == {"train": 1, "val": 1}
    assert len(two["predictions"]) == 5  # evaluation sees every image


def test_tensorflow_trains_on_two_devices_with_mirrored_strategy(tmp_path: Path) -> None:
    """Keras 3's distribution API is JAX-only; on TensorFlow it is MirroredStrategy. Each
    device draws its own dropout masks there, so the runs part slowly (the lstm's
    second-epoch loss was 1.8% apart); the first epoch's loss matches."""
    kwargs = {"n_train": 12, "n_val": 4, "epochs": 2, "backend": "tensorflow"}
    one = _train("lstm", 1, tmp_path / "one", **kwargs)
    two = _train("lstm", 2, tmp_path / "two", **kwargs)
    assert one["devices"]["mechanism"] == "single_device"
    assert two["devices"]["mechanism"] == "tf.distribute.MirroredStrategy"
    assert two["devices"]["devices"] == ["cpu:0", "cpu:1"]
    assert two["devices"]["per_device_batch"] == 2
    assert two["history"]["loss"][0] == pytest.approx(one["history"]["loss"][0], rel=2e-3)
    assert len(two["predictions"]) == 4 and all(0 <= p <= 1 for p in two["predictions"])


def test_the_global_batch_must_split_evenly() -> None:
    plan = plan_training_devices(32, ["gpu:0", "gpu:1", "gpu:2", "gpu:3"])
    assert plan.count == 4 and plan.per_device_batch == 8
    assert [even_length(n, plan) for n in (1600, 1601, 1603, 3)] == [1600, 1600, 1600, 0]
    with pytest.raises(ConfigError, match="batch_size 30 does not split evenly across the 4"):
        plan_training_devices(30, ["gpu:0", "gpu:1", "gpu:2", "gpu:3"])
    single = plan_training_devices(30, ["cpu:0"])
    assert single == TrainingDevices("tensorflow", ["cpu:0"], "single_device", 30, 30)
    assert even_length(1601, single) == 1601
    assert load_settings("paper", environ={}).preprocess.batch_size % 8 == 0  # 1-8 GPUs
