from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from pipeline import device


def test_auto_speed_switches_resolve_to_what_the_device_has(tiny_cfg, monkeypatch) -> None:
    default = tiny_cfg()  # bfloat16 is opt-in: it trains worse models (benchmarks/fast_path.py)
    assert default.train.mixed_precision is False and default.train.fused_adam == "auto"
    monkeypatch.setattr(device, "cpu_has_bfloat16", lambda: True)
    assert device.resolve_device_settings(default).train.mixed_precision is False
    cfg = tiny_cfg("train.mixed_precision=auto")
    monkeypatch.setattr(device, "cpu_has_bfloat16", lambda: True)
    resolved = device.resolve_device_settings(cfg)
    assert resolved.train.mixed_precision == "bfloat16" and resolved.train.fused_adam is True
    monkeypatch.setattr(device, "cpu_has_bfloat16", lambda: False)
    assert device.resolve_device_settings(cfg).train.mixed_precision is False
    assert cfg.train.mixed_precision == "auto"  # the caller's config is left as it was
    explicit = device.resolve_device_settings(
        tiny_cfg("train.mixed_precision=float16", "train.fused_adam=false")
    )
    assert explicit.train.mixed_precision == "float16" and explicit.train.fused_adam is False


def test_jit_compile_auto_is_resolved_to_what_runs(tiny_cfg, monkeypatch) -> None:
    monkeypatch.setattr(device, "gpu_count", lambda: 0)
    assert device.resolve_device_settings(tiny_cfg()).train.jit_compile is False
    monkeypatch.setattr(device, "gpu_count", lambda: 1)
    monkeypatch.setattr(device, "gpu_has_bfloat16", lambda: False)
    assert device.resolve_device_settings(tiny_cfg()).train.jit_compile is True
    pinned = tiny_cfg("train.jit_compile=false")
    assert device.resolve_device_settings(pinned).train.jit_compile is False


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN is asked for on x86"
)
@pytest.mark.parametrize(("setting", "expected"), [(None, "on"), ("0", "off"), ("1", "on")])
def test_tensorflow_runs_onednn_kernels_on_x86_unless_turned_off(setting, expected) -> None:
    """TensorFlow picks oneDNN itself only on CPUs with AVX512_VNNI/BF16 or AMX; the package asks
    for it everywhere on x86 (AVX2-only CPUs otherwise train on the slower Eigen kernels), and an
    explicit TF_ENABLE_ONEDNN_OPTS still decides."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    probe = (
        "import os, pipeline; from pipeline.device import describe_device; "
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], describe_device())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == f"{setting or '1'} tensorflow: CPU, oneDNN {expected}"
