"""Counting a network's arithmetic: what the benchmarks divide by the time a step takes."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers


def forward_flops(model: keras.Model) -> int:
    """Floating-point operations (a multiply-add = 2) of one image's forward pass through the
    convolutions and dense layers, which hold all but a few percent of the arithmetic."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        elif isinstance(layer, layers.Conv2DTranspose):
            h, w, c_in = layer.input.shape[1:]
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += 2 * h * w * k * c_in * layer.filters
        elif isinstance(layer, layers.Conv2D):
            h, w = layer.output.shape[1:3]
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += 2 * h * w * k * layer.input.shape[-1] * layer.filters
        elif isinstance(layer, layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def training_flops(encoder: keras.Model, decoder: keras.Model) -> int:
    """Per image and training step: the forward pass and a backward pass of about twice its cost
    (the gradients of the inputs and of the weights)."""
    return 3 * (forward_flops(encoder) + forward_flops(decoder))


def critic_training_flops(critic: keras.Model) -> int:
    """The patch critic per image and training step: its forward pass on x, on x̂ detached and on
    x̂ attached (≈ 3 forward), each with a backward pass of about twice that (weights and inputs)."""
    return 3 * 3 * forward_flops(critic)


def sample_decoding_flops(decoder: keras.Model) -> int:
    """A critic on samples (model.critic_fakes=samples) per image and training step: the decoder
    once more, on the drawn codes, with a backward pass for its weights (≈ 3 forward); the critic
    itself costs what it does on reconstructions (critic_training_flops)."""
    return 3 * forward_flops(decoder)


def perceptual_training_flops(image_size: int) -> int:
    """The LPIPS term per image and training step: AlexNet's forward pass on x and on x̂, and
    x̂'s backward pass to the pixels (no weight gradients: the network is frozen), ≈ 3 forward."""
    from pipeline.perceptual import trunk

    return 3 * forward_flops(trunk(image_size))


def run_flops(cfg: Any, image_size: int) -> dict[str, float]:
    """Training GFLOP per image of one run of a composed config (model.*, train.*): per step
    before and while the critic trains, and summed over the run's `train.epochs`, so a longer
    schedule or an earlier critic counts what it costs."""
    from pipeline.networks import build_critic, build_model

    encoder, decoder = build_model(cfg.model, image_size)
    step = training_flops(encoder, decoder)
    if cfg.model.get("perceptual_weight", 0) > 0:
        step += perceptual_training_flops(image_size)
    epochs = int(cfg.train.epochs)
    critic_step, critic_epochs = step, 0
    if cfg.model.get("adversarial_weight", 0) > 0:
        critic_step += critic_training_flops(
            build_critic(list(cfg.model.critic_widths), image_size)
        )
        if cfg.model.get("critic_fakes", "reconstructions") == "samples":
            critic_step += sample_decoding_flops(decoder)
        critic_epochs = max(0, epochs - int(cfg.train.get("adversarial_start_epoch", 0)))
    run = (epochs - critic_epochs) * step + critic_epochs * critic_step
    return {
        "epochs": epochs,
        "critic_epochs": critic_epochs,
        "step_gflop": step / 1e9,
        "critic_step_gflop": critic_step / 1e9,
        "run_gflop": run / 1e9,
    }
