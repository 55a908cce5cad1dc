"""Where training runs: the Keras backend, its devices, and whether bfloat16 pays off.

Mixed bfloat16 (float32 weights, bfloat16 compute) about halves the time of a ResNet50
epoch on GPUs and on CPUs with native bfloat16 (AVX512-BF16 or AMX); on other CPUs
(AVX2 only) Keras emulates it and an epoch takes several times longer than in float32.
``train.mixed_precision: auto`` therefore uses it only where it is native.

Data parallelism: when more than one accelerator (or forced host CPU device, e.g.
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` on JAX) is visible, training runs
on all of them with the global batch (``preprocess.batch_size``) split evenly across
them. On JAX this is Keras 3's distribution API (``keras.distribution.DataParallel``:
the batch is sharded, the weights replicated, one jitted step over the global batch, so
batch-norm statistics are those of the whole batch, as on one device). Keras 3's
distribution API is JAX-only (its TensorFlow part is marked "do not use"), so on
TensorFlow it is ``tf.distribute.MirroredStrategy`` (batch-norm statistics per device).
Both need every batch to split evenly: the global batch must be a multiple of the
device count, and the training and validation arrays are cut to a multiple of it (at
most ``devices - 1`` images each; :func:`even_length`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import keras

from cxr.core.errors import ConfigError

NATIVE_BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def compute_devices() -> dict[str, object]:
    """Which Keras backend runs, whether it sees an accelerator, and whether the CPU
    computes bfloat16 natively."""
    backend = keras.backend.backend()
    devices: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        devices = [d.name for d in tf.config.list_logical_devices()]
    elif backend == "jax":
        import jax

        devices = [str(d) for d in jax.devices()]
    elif backend == "torch":
        import torch

        devices = ["cuda"] if torch.cuda.is_available() else ["cpu"]
    gpu = any("gpu" in d.lower() or "cuda" in d.lower() for d in devices)
    training = training_device_names()
    return {
        "backend": backend,
        "devices": devices,
        "gpu": gpu,
        "cpu_native_bfloat16": cpu_has_native_bfloat16(),
        "training_devices": training,
        "data_parallel": len(training) > 1,
    }


def training_device_names() -> list[str]:
    """The devices training runs on: every visible accelerator, else every CPU device
    (Keras' ``list_devices``: ``gpu:0``, ``gpu:1``, ... or ``cpu:0``)."""
    return [str(d) for d in keras.distribution.list_devices()]


@dataclass(frozen=True)
class TrainingDevices:
    """Where one model trains and how its batch is split."""

    backend: str
    devices: list[str]
    mechanism: Literal[
        "single_device", "keras.distribution.DataParallel", "tf.distribute.MirroredStrategy"
    ]
    global_batch: int
    per_device_batch: int

    @property
    def count(self) -> int:
        return len(self.devices)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def plan_training_devices(global_batch: int, devices: list[str] | None = None) -> TrainingDevices:
    """Data parallelism over ``devices`` (default: all visible ones, see
    :func:`training_device_names`) when there are several; one device otherwise."""
    devices = training_device_names() if devices is None else devices
    backend = keras.backend.backend()
    if len(devices) <= 1:
        return TrainingDevices(backend, devices, "single_device", global_batch, global_batch)
    if global_batch % len(devices):
        raise ConfigError(
            f"preprocess.batch_size {global_batch} does not split evenly across the "
            f"{len(devices)} training devices {devices}: set a multiple of {len(devices)} "
            "(or make fewer devices visible, e.g. CUDA_VISIBLE_DEVICES)"
        )
    if backend == "jax":
        mechanism = "keras.distribution.DataParallel"
    elif backend == "tensorflow":
        mechanism = "tf.distribute.MirroredStrategy"
    else:
        raise ConfigError(
            f"data-parallel training supports the jax and tensorflow backends, not {backend}: "
            "set KERAS_BACKEND=jax or make one device visible"
        )
    per_device = global_batch // len(devices)
    return TrainingDevices(backend, devices, mechanism, global_batch, per_device)


@contextlib.contextmanager
def distribution_scope(plan: TrainingDevices) -> Iterator[None]:
    """Build, compile and fit inside this scope to train on ``plan``'s devices. Outside
    it the models are ordinary one-device models again (load a saved checkpoint there to
    evaluate or serve it)."""
    if plan.mechanism == "keras.distribution.DataParallel":
        with keras.distribution.DataParallel(devices=plan.devices).scope():
            yield
    elif plan.mechanism == "tf.distribute.MirroredStrategy":
        import tensorflow as tf

        names = [f"/{name}" for name in plan.devices]  # gpu:0 -> /gpu:0
        with tf.distribute.MirroredStrategy(names).scope():
            yield
    else:
        yield


def even_length(n: int, plan: TrainingDevices) -> int:
    """The largest length <= ``n`` that splits evenly across ``plan``'s devices (with a
    global batch that is a multiple of the device count, every batch then splits)."""
    return n - n % plan.count


def cpu_has_native_bfloat16(cpuinfo: Path | None = None) -> bool:
    """Whether the CPU flags (Linux ``/proc/cpuinfo``) include AVX512-BF16 or AMX-BF16;
    False where the file cannot be read (other systems: float32 is the safe choice)."""
    try:
        text = (cpuinfo or CPUINFO).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(NATIVE_BFLOAT16_CPU_FLAGS & set(line.partition(":")[2].split()))
    return False


def use_bfloat16(setting: bool | Literal["auto"]) -> bool:
    """Resolve ``train.mixed_precision``: True/False as set; ``auto``: where bfloat16 is
    native (a GPU, or a CPU with AVX512-BF16/AMX)."""
    if setting != "auto":
        return bool(setting)
    devices = compute_devices()
    return bool(devices["gpu"] or devices["cpu_native_bfloat16"])
