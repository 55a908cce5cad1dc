"""Where training runs: the Keras backend, its devices, and whether bfloat16 pays off.

Mixed bfloat16 (float32 weights, bfloat16 compute) about halves the time of a ResNet50
epoch on GPUs and on CPUs with native bfloat16 (AVX512-BF16 or AMX); on other CPUs
(AVX2 only) Keras emulates it and an epoch takes several times longer than in float32.
``train.mixed_precision: auto`` therefore uses it only where it is native.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import keras

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
    return {
        "backend": backend,
        "devices": devices,
        "gpu": gpu,
        "cpu_native_bfloat16": cpu_has_native_bfloat16(),
    }


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
