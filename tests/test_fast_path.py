"""benchmarks/fast_path.py compares speed switches: every arm but `defaults` must change the
training config, or it measures the defaults twice under another name."""

from __future__ import annotations

from omegaconf import OmegaConf

from pipeline.config import compose_config
from tests.conftest import load_benchmark


def test_every_arm_differs_from_the_defaults_and_from_each_other() -> None:
    module = load_benchmark("fast_path")
    composed = {
        arm: OmegaConf.to_container(compose_config(overrides).train, resolve=True)
        for arm, overrides in module.ARMS.items()
    }
    for train in composed.values():
        if not train["mixed_precision"]:  # which layers stay float32 only matters under bf16/fp16
            train["float32_layers"] = "n/a in float32"
    defaults = composed.pop("defaults")
    same = [arm for arm, train in composed.items() if train == defaults]
    assert not same, f"arms {same} train exactly as the defaults do"
    seen: dict[str, str] = {}
    for arm, train in composed.items():
        key = repr(sorted(train.items()))
        assert key not in seen, f"arms {seen.get(key)} and {arm} are the same training"
        seen[key] = arm
