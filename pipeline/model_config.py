"""The model config's checks: one clear message per bad value, before anything is built (model.py
builds and trains what passes)."""

from __future__ import annotations

import math
from typing import Any

from pipeline.errors import PipelineError
from pipeline.losses import LIKELIHOODS
from pipeline.networks import CRITIC_WIDTHS, MODELS, UPSAMPLINGS, architecture

SIGMAS = ("learned", "optimal")  # how a gaussian likelihood gets its σ (model.sigma)
# what the critic tells from the real faces (model.critic_fakes): the batch's reconstructions, or
# faces decoded from new codes drawn around the batch's (VAE.sample_codes)
CRITIC_FAKES = ("reconstructions", "samples")


def is_weight(value: Any) -> bool:
    """A loss term's weight: a finite number >= 0 (True/False are not numbers here)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value >= 0
    )


def validate_model_config(cfg: Any, image_size: int) -> None:
    """One clear message per bad value, before anything is built."""
    arch = architecture(cfg)
    if not isinstance(cfg.name, str) or not cfg.name:
        raise PipelineError(f"model.name={cfg.name!r} must be a non-empty name (conf/model/*.yaml)")
    if arch not in MODELS:
        raise PipelineError(
            f"model.arch={arch!r} is unknown: choose one of {', '.join(MODELS)} (model=seed|conv|sigma_vae)"
        )
    if (
        isinstance(cfg.latent_dim, bool)
        or not isinstance(cfg.latent_dim, int)
        or cfg.latent_dim <= 0
    ):
        raise PipelineError(f"model.latent_dim={cfg.latent_dim!r} must be a positive integer")
    hidden = cfg.get("hidden", 0)
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
        raise PipelineError(f"model.hidden={hidden!r} must be an integer >= 0 (0: no hidden layer)")
    blocks = cfg.get("decoder_res_blocks", 0)
    counts = [blocks] if isinstance(blocks, int) else list(blocks)
    stages = len(cfg.widths) if arch == "conv" else len(counts)
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in counts) or (
        not isinstance(blocks, int) and len(counts) != stages
    ):
        raise PipelineError(
            f"model.decoder_res_blocks={blocks!r} must be an integer >= 0 or one per decoder "
            f"upsampling ({stages} for model.widths={list(cfg.widths)}), smallest resolution first"
        )
    upsample = cfg.get("decoder_upsample", "transposed")
    kinds = [upsample] if isinstance(upsample, str) else list(upsample)
    if any(k not in UPSAMPLINGS for k in kinds) or (
        not isinstance(upsample, str) and len(kinds) != stages
    ):
        raise PipelineError(
            f"model.decoder_upsample={upsample!r} must be one of {', '.join(UPSAMPLINGS)}, or one "
            f"per decoder upsampling ({stages} for model.widths={list(cfg.widths)}), smallest "
            f"resolution first"
        )
    if arch == "conv" and (not cfg.widths or any(w <= 0 for w in cfg.widths)):
        raise PipelineError(
            f"model.widths={list(cfg.widths)} must be one or more positive integers"
        )
    if not is_weight(cfg.beta):
        raise PipelineError(f"model.beta={cfg.beta!r} must be a finite number >= 0")
    if cfg.get("sigma", "learned") not in SIGMAS:
        raise PipelineError(
            f"model.sigma={cfg.sigma!r} is unknown: choose one of {', '.join(SIGMAS)}"
        )
    floor = cfg.get("sigma_floor", 0.0)
    if (
        isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 <= floor < 1
    ):  # nan too
        raise PipelineError(
            f"model.sigma_floor={floor!r} must be a number in [0, 1) (pixel units; 0 = no floor)"
        )
    if cfg.likelihood not in LIKELIHOODS:
        raise PipelineError(
            f"model.likelihood={cfg.likelihood!r} is unknown: choose one of {', '.join(LIKELIHOODS)}"
        )
    weight = cfg.get("perceptual_weight", 0.0)
    if not is_weight(weight):
        raise PipelineError(
            f"model.perceptual_weight={weight!r} must be a finite number >= 0 (0 = no LPIPS term)"
        )
    if weight > 0:
        from pipeline.perceptual import MIN_SIZE, load_weights

        if image_size < MIN_SIZE:
            raise PipelineError(
                f"model.perceptual_weight={weight} needs images of at least {MIN_SIZE} px (LPIPS's "
                f"AlexNet strides and pools them down to nothing below that); the prepared "
                f"images are {image_size} px: set model.perceptual_weight=0"
            )
        load_weights(perceptual_weights_path(cfg))  # present and well-formed, before any work
    adversarial = cfg.get("adversarial_weight", 0.0)
    if not is_weight(adversarial):
        raise PipelineError(
            f"model.adversarial_weight={adversarial!r} must be a finite number >= 0 (0 = no critic)"
        )
    critic = list(cfg.get("critic_widths", CRITIC_WIDTHS))
    if adversarial > 0 and (
        not critic
        or any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in critic)
        or image_size % 2 ** len(critic)
    ):
        raise PipelineError(
            f"model.critic_widths={critic} must be one or more positive integers, one per halving "
            f"of the {image_size}px image (so at most {int(math.log2(image_size & -image_size))})"
        )
    fakes = cfg.get("critic_fakes", "reconstructions")
    if fakes not in CRITIC_FAKES:
        raise PipelineError(
            f"model.critic_fakes={fakes!r} is unknown: choose one of {', '.join(CRITIC_FAKES)}"
        )
    factor = 4 if arch == "seed" else 2 ** len(cfg.widths)
    if image_size % factor:
        raise PipelineError(
            f"model={cfg.name} halves the image {int(math.log2(factor))} times, so the image side must be "
            f"a multiple of {factor}; the prepared images are {image_size}px (change data.prepare.size)"
        )


def perceptual_weights_path(cfg: Any) -> str:
    """model.perceptual_weights against the directory the command was started in (Hydra's
    original working directory when a job runs elsewhere)."""
    from hydra.utils import to_absolute_path

    return to_absolute_path(str(cfg.get("perceptual_weights", "data/lpips/alexnet.npz")))
