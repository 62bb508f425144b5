"""The VAE's loss terms, per image: -log p(x|z) for each decoder likelihood, KL(q(z|x) || N(0, I))
and a patch critic's hinge loss. Only `keras.ops`, so they run under every backend; evaluation
uses the same functions for its held-out likelihood.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

LIKELIHOODS = ("bce_channel_mean", "bce_sum", "gaussian")
LOG_2PI = math.log(2.0 * math.pi)


def kl_divergence(z_mean: Any, z_log_var: Any) -> Any:
    """KL(q(z|x) || N(0, I)) per image, summed over latent dimensions."""
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


def critic_hinge(real_logits: Any, fake_logits: Any) -> Any:
    """The critic's hinge loss (Lim & Ye 2017, as in VQGAN): real patches pushed above +1,
    decoded ones below -1, nothing more once they are there."""
    return 0.5 * (
        ops.mean(ops.relu(1.0 - ops.cast(real_logits, "float32")))
        + ops.mean(ops.relu(1.0 + ops.cast(fake_logits, "float32")))
    )


def reconstruction_nll(x: Any, x_hat: Any, likelihood: str, log_sigma: Any = None) -> Any:
    """-log p(x|z) per image (nats), for the configured decoder likelihood.

    bce_channel_mean: the notebook's loss, Keras BCE averaged over channels, summed over H, W.
    bce_sum:          Bernoulli cross-entropy summed over every value (64*64*3 terms).
    gaussian:         N(x; x_hat, sigma^2) with one learned sigma: a true density, so the
                      negative ELBO is a real bound (and σ balances reconstruction against KL).
    """
    x = ops.cast(x, "float32")
    x_hat = ops.cast(x_hat, "float32")
    if likelihood == "gaussian":
        per_value = 0.5 * ops.square((x - x_hat) / ops.exp(log_sigma)) + log_sigma + 0.5 * LOG_2PI
        return ops.sum(per_value, axis=(1, 2, 3))
    eps = keras.config.epsilon()
    x_hat = ops.clip(x_hat, eps, 1.0 - eps)
    bce = -(x * ops.log(x_hat) + (1.0 - x) * ops.log(1.0 - x_hat))
    if likelihood == "bce_channel_mean":
        return ops.sum(ops.mean(bce, axis=-1), axis=(1, 2))
    return ops.sum(bce, axis=(1, 2, 3))
