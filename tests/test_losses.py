from __future__ import annotations

import keras
import numpy as np

from pipeline.losses import critic_hinge, kl_divergence, reconstruction_nll


def test_kl_of_prior_is_zero_and_known_value() -> None:
    zeros = np.zeros((3, 5), np.float32)
    np.testing.assert_allclose(kl_divergence(zeros, zeros), np.zeros(3), atol=1e-6)
    # KL(N(1, e^0) || N(0,1)) = 0.5 * mu^2 = 0.5 per dimension
    np.testing.assert_allclose(
        kl_divergence(np.ones((1, 4), np.float32), np.zeros((1, 4), np.float32)), [2.0], rtol=1e-6
    )


def test_reconstruction_terms_against_hand_computed_values() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 4, 4, 3)).astype(np.float32)
    p = rng.uniform(0.1, 0.9, (2, 4, 4, 3)).astype(np.float32)
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p))
    np.testing.assert_allclose(
        reconstruction_nll(x, p, "bce_sum"), bce.sum(axis=(1, 2, 3)), rtol=1e-5
    )
    np.testing.assert_allclose(
        reconstruction_nll(x, p, "bce_channel_mean"), bce.mean(-1).sum(axis=(1, 2)), rtol=1e-5
    )
    # the notebook's loss: Keras BCE (mean over the channel axis) summed over H and W
    keras_bce = keras.ops.sum(keras.losses.binary_crossentropy(x, p), axis=(1, 2))
    np.testing.assert_allclose(reconstruction_nll(x, p, "bce_channel_mean"), keras_bce, rtol=1e-4)
    log_sigma = np.float32(-1.5)
    gauss = 0.5 * ((x - p) / np.exp(log_sigma)) ** 2 + log_sigma + 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(
        reconstruction_nll(x, p, "gaussian", log_sigma), gauss.sum(axis=(1, 2, 3)), rtol=1e-5
    )


def test_the_critic_hinge_stops_pulling_past_its_margins() -> None:
    real = np.array([[2.0, 0.0]], np.float32)  # one patch past +1, one at 0: a loss of 1 on it
    fake = np.array([[-3.0, 0.5]], np.float32)  # one past -1, one at 0.5: a loss of 1.5 on it
    np.testing.assert_allclose(float(critic_hinge(real, fake)), 0.5 * (1.0 / 2 + 1.5 / 2))
    sure = critic_hinge(np.full((2, 3), 1.5, np.float32), np.full((2, 3), -1.5, np.float32))
    assert float(sure) == 0.0
