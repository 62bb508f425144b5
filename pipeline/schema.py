"""The training config's schema: types from dataclasses (OmegaConf structured configs), ranges and
choices from the checks below. Every bad value fails here with one line naming the key, before
anything is built or any store is opened.

Why not Hydra's ConfigStore: DVC composes conf/ in its own process (`dvc exp run -S`, and
`python -m pipeline.config` through DVC's composer), where a schema registered by this package does
not exist; so conf/ stays plain YAML and the schema is applied when a stage starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline import sampler
from pipeline.errors import PipelineError
from pipeline.model import LR_SCHEDULES
from pipeline.model_config import validate_model_config
from pipeline.networks import CRITIC_WIDTHS, FLOAT32_LAYERS


@dataclass
class ModelSchema:
    name: str = "conv"
    arch: str = "conv"
    latent_dim: int = 128
    beta: float = 1.0
    likelihood: str = "bce_channel_mean"
    sigma_floor: float = 0.0
    sigma: str = "learned"
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    batch_norm: bool = False
    hidden: int = 0
    decoder_res_blocks: Any = 0  # an int, or one per upsampling (model_config.py checks)
    decoder_upsample: Any = "transposed"  # a name, or a list of one per upsampling (likewise)
    perceptual_weight: float = 0.0
    perceptual_weights: str = "data/lpips/alexnet.npz"
    adversarial_weight: float = 0.0
    critic_widths: list[int] = field(default_factory=lambda: list(CRITIC_WIDTHS))
    critic_fakes: str = "reconstructions"


@dataclass
class TrainSchema:
    epochs: int = 50
    batch_size: int = 64
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    ema: float = 0.0
    weight_decay: float = 0.0
    kl_warmup_epochs: int = 0
    adversarial_start_epoch: int = 0
    hflip: bool = False
    seed: int = 42
    deterministic: bool = True
    steps_per_execution: int = 8
    mixed_precision: Any = False  # false | auto | bfloat16 | float16 (checked below)
    float32_layers: list[str] = field(default_factory=lambda: ["latent", "output"])
    fused_adam: Any = "auto"  # auto | true | false
    jit_compile: Any = "auto"  # auto | true | false
    sample_every: int = 5
    resume: bool = True


def typed(cfg: DictConfig) -> DictConfig:
    """A copy of cfg whose `model` and `train` passed their schemas: a wrong type ("abc" for an
    integer, true for a number) or an unknown key (`+train.foo=1`) is one PipelineError."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for group, schema in (("model", ModelSchema), ("train", TrainSchema)):
        try:
            out[group] = OmegaConf.merge(OmegaConf.structured(schema), out[group])
        except OmegaConfBaseException as err:
            key = f"{group}.{err.full_key}" if getattr(err, "full_key", None) else group
            first = str(getattr(err, "msg", err)).splitlines()[0]
            raise PipelineError(f"{key}: {first} (fix the override or conf/{group}/)") from None
    return out


def validate_train_config(cfg: DictConfig, image_size: int) -> DictConfig:
    """The typed config, once every value is in range; raises PipelineError otherwise."""
    cfg = typed(cfg)
    validate_model_config(cfg.model, image_size)
    t = cfg.train
    checks = [
        (t.epochs > 0, "train.epochs", t.epochs, "a positive integer"),
        (t.batch_size > 0, "train.batch_size", t.batch_size, "a positive integer"),
        (
            math.isfinite(t.learning_rate) and t.learning_rate > 0,
            "train.learning_rate",
            t.learning_rate,
            "a finite number > 0",
        ),
        (
            t.lr_schedule in LR_SCHEDULES,
            "train.lr_schedule",
            t.lr_schedule,
            " or ".join(LR_SCHEDULES),
        ),
        (0 <= t.ema < 1, "train.ema", t.ema, "a number in [0, 1) (0 = off)"),
        (
            math.isfinite(t.weight_decay) and t.weight_decay >= 0,
            "train.weight_decay",
            t.weight_decay,
            "a finite number >= 0 (0 = off)",
        ),
        (t.kl_warmup_epochs >= 0, "train.kl_warmup_epochs", t.kl_warmup_epochs, "an integer >= 0"),
        (
            t.adversarial_start_epoch >= 0,
            "train.adversarial_start_epoch",
            t.adversarial_start_epoch,
            "an integer >= 0 (the epoch, counted from 0, where a critic joins)",
        ),
        (
            t.steps_per_execution > 0,
            "train.steps_per_execution",
            t.steps_per_execution,
            "a positive integer",
        ),
        (t.sample_every > 0, "train.sample_every", t.sample_every, "a positive integer"),
        (
            t.jit_compile in ("auto", True, False),
            "train.jit_compile",
            t.jit_compile,
            "auto, true or false",
        ),
        (
            t.mixed_precision in ("auto", False, "bfloat16", "float16"),
            "train.mixed_precision",
            t.mixed_precision,
            "auto, false, bfloat16 or float16",
        ),
        (
            all(g in FLOAT32_LAYERS for g in t.float32_layers),
            "train.float32_layers",
            list(t.float32_layers),
            f"a list of {', '.join(FLOAT32_LAYERS)}",
        ),
        (
            t.fused_adam in ("auto", True, False),
            "train.fused_adam",
            t.fused_adam,
            "auto, true or false",
        ),
    ]
    for ok, key, value, expected in checks:
        if not ok:
            raise PipelineError(f"{key}={value!r} is invalid: it must be {expected}")
    sampler.validate("gmm", list(cfg.sampler.components))
    return cfg
