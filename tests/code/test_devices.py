"""`train.mixed_precision: auto` uses bfloat16 only where the hardware computes it natively."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr.core.config import load_settings
from cxr.train import devices

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"), [(AVX2_ONLY, False), (SAPPHIRE_RAPIDS, True), ("no flags", False)]
)
def test_cpu_flags_decide_native_bfloat16(tmp_path: Path, cpuinfo: str, native: bool) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert devices.cpu_has_native_bfloat16(path) is native


def test_unreadable_cpuinfo_means_float32(tmp_path: Path) -> None:
    assert devices.cpu_has_native_bfloat16(tmp_path / "missing") is False


def test_auto_follows_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(devices, "CPUINFO", path)
    path.write_text(AVX2_ONLY)
    assert devices.use_bfloat16("auto") is devices.compute_devices()["gpu"]  # False on CPU
    path.write_text(SAPPHIRE_RAPIDS)
    assert devices.use_bfloat16("auto") is True
    assert devices.use_bfloat16(False) is False and devices.use_bfloat16(True) is True


def test_recipe_asks_for_auto_and_the_paper_for_float32() -> None:
    assert load_settings("recipe", environ={}).train.mixed_precision == "auto"
    assert load_settings("paper", environ={}).train.mixed_precision is False
    with pytest.raises(ValueError, match="mixed_precision"):
        load_settings("recipe", overrides={"train.mixed_precision": "sometimes"}, environ={})


def test_the_report_names_the_training_devices() -> None:
    report = devices.compute_devices()
    assert report["training_devices"] == devices.training_device_names()
    assert report["training_devices"]  # at least the CPU
    assert report["data_parallel"] is (len(report["training_devices"]) > 1)
    plan = devices.plan_training_devices(32)
    assert plan.devices == report["training_devices"]
    expected = "single_device" if plan.count == 1 else plan.mechanism
    assert plan.mechanism == expected and plan.per_device_batch * plan.count == 32
