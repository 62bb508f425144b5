"""Counting a network's arithmetic: what the benchmarks divide by the time a step takes."""

from __future__ import annotations

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
