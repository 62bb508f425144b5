from __future__ import annotations

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
