"""Checks of the training config: every bad value fails here, with its name and a fix, before
anything is built or any store is opened."""

from __future__ import annotations

from omegaconf import DictConfig

from pipeline.errors import PipelineError
from pipeline.model import FLOAT32_LAYERS, validate_model_config


def validate_train_config(cfg: DictConfig, image_size: int) -> None:
    """Every bad value fails here, with its name and a fix, before any model is built."""
    validate_model_config(cfg.model, image_size)
    t = cfg.train
    checks = [
        (
            isinstance(t.epochs, int) and t.epochs > 0,
            "train.epochs",
            t.epochs,
            "a positive integer",
        ),
        (
            isinstance(t.batch_size, int) and t.batch_size > 0,
            "train.batch_size",
            t.batch_size,
            "a positive integer",
        ),
        (
            isinstance(t.learning_rate, int | float) and t.learning_rate > 0,
            "train.learning_rate",
            t.learning_rate,
            "a number > 0",
        ),
        (
            isinstance(t.kl_warmup_epochs, int) and t.kl_warmup_epochs >= 0,
            "train.kl_warmup_epochs",
            t.kl_warmup_epochs,
            "an integer >= 0",
        ),
        (
            isinstance(t.steps_per_execution, int) and t.steps_per_execution > 0,
            "train.steps_per_execution",
            t.steps_per_execution,
            "a positive integer",
        ),
        (
            isinstance(t.sample_every, int) and t.sample_every > 0,
            "train.sample_every",
            t.sample_every,
            "a positive integer",
        ),
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
