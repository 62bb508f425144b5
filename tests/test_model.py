from __future__ import annotations

import itertools
import subprocess
import sys

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline.errors import PipelineError
from pipeline.losses import critic_hinge, kl_divergence, reconstruction_nll
from pipeline.model import VAE
from pipeline.model_config import validate_model_config
from pipeline.networks import build_critic, build_model

NO_LPIPS = "model.perceptual_weight=0"  # tests of training knobs run the network alone


def model_cfg(**kw: object):
    base = {
        "name": "seed",
        "latent_dim": 128,
        "beta": 1.0,
        "widths": [32, 64, 128, 256],
        "likelihood": "bce_sum",
    }
    return OmegaConf.create({**base, **kw})


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"name": "conv", "decoder_res_blocks": [1, 1]}, "one per decoder upsampling"),
        ({"name": "conv", "decoder_res_blocks": -1}, "must be an integer >= 0"),
        ({"name": "conv", "decoder_upsample": "bilinear"}, "decoder_upsample='bilinear' must be"),
        ({"name": "conv", "decoder_upsample": ["resize"]}, "one per decoder upsampling"),
        ({"name": "conv", "decoder_upsample": ["resize", "x", "resize"]}, "one of transposed"),
        ({"beta": float("nan")}, "finite number"),
        ({"beta": float("inf")}, "finite number"),
        ({"likelihood": "gaussian", "sigma": "magic"}, "model.sigma='magic' is unknown"),
    ],
)
def test_bad_new_model_values_are_one_clear_error(kw: dict, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        validate_model_config(model_cfg(widths=[8, 16, 32], **kw), 64)


def test_optimal_sigma_is_the_batch_rmse_and_has_no_weight() -> None:
    encoder, decoder = build_model(model_cfg(name="conv", latent_dim=4, widths=[8, 16]), 16)
    vae = VAE(encoder, decoder, likelihood="gaussian", sigma="optimal", sigma_floor=0.01)
    assert vae.log_sigma is None  # nothing for Adam to move: σ follows the reconstructions
    x = np.full((2, 16, 16, 3), 0.5, np.float32)
    x_hat = x + np.float32(0.1)
    reconstruction, *_ = vae.loss_terms(x, (x_hat, np.zeros((2, 4)), np.zeros((2, 4))))
    # σ = RMSE = 0.1, so every value costs 0.5 + log 0.1 + 0.5 log 2π
    per_value = 0.5 + np.log(0.1) + 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(float(reconstruction), 16 * 16 * 3 * per_value, rtol=1e-4)
    # a perfect reconstruction stops at the floor instead of dividing by zero
    exact, *_ = vae.loss_terms(x, (x, np.zeros((2, 4)), np.zeros((2, 4))))
    np.testing.assert_allclose(
        float(exact), 16 * 16 * 3 * (np.log(0.01) + 0.5 * np.log(2 * np.pi)), rtol=1e-4
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"latent_dim": 0}, "latent_dim=0 must be a positive integer"),
        ({"beta": -1.0}, r"beta=-1.0 must be a finite number >= 0"),
        ({"arch": "resnet"}, "model.arch='resnet' is unknown"),
        ({"likelihood": "poisson"}, "likelihood='poisson' is unknown"),
        ({"sigma_floor": -0.01}, r"sigma_floor=-0.01 must be a number in \[0, 1\)"),
        ({"sigma_floor": 1.0}, r"sigma_floor=1.0 must be a number in \[0, 1\)"),
    ],
)
def test_bad_model_config_is_one_clear_error(override: dict, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        validate_model_config(model_cfg(**override), 64)


def test_image_size_the_architecture_cannot_take() -> None:
    with pytest.raises(PipelineError, match=r"multiple of 16.*data\.prepare\.size"):
        validate_model_config(model_cfg(name="conv", widths=[8, 16, 32, 64]), 40)


def test_train_step_reduces_loss_on_a_fixed_batch() -> None:
    keras.utils.set_random_seed(0)
    encoder, decoder = build_model(model_cfg(name="conv", latent_dim=4, widths=[8, 16]), 16)
    vae = VAE(encoder, decoder, likelihood="bce_sum")
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = np.random.default_rng(0).random((32, 16, 16, 3)).astype(np.float32) * 0.2 + 0.4
    first = vae.train_on_batch(x, return_dict=True)
    for _ in range(20):
        last = vae.train_on_batch(x, return_dict=True)
    assert set(first) >= {"loss", "reconstruction", "kl"}
    assert last["loss"] < first["loss"]


def gaussian_vae(sigma_floor: float) -> VAE:
    encoder, decoder = build_model(model_cfg(name="conv", latent_dim=4, widths=[8, 16]), 16)
    return VAE(encoder, decoder, likelihood="gaussian", sigma_floor=sigma_floor)


def test_sigma_floor_bounds_the_sigma_the_loss_uses() -> None:
    x = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    floored, free = gaussian_vae(0.04), gaussian_vae(0.0)
    for vae in (floored, free):
        vae.log_sigma.assign(np.log(0.001))  # far below the floor, as a long run drifts to
    y_pred = floored(x)  # the forward pass carries the σ the loss uses
    np.testing.assert_allclose(float(y_pred[3]), np.log(0.04), rtol=1e-6)
    np.testing.assert_allclose(float(floored.effective_log_sigma()), np.log(0.04), rtol=1e-6)
    np.testing.assert_allclose(float(free.effective_log_sigma()), np.log(0.001), rtol=1e-6)
    recon, *_ = floored.loss_terms(x, y_pred)
    expected = reconstruction_nll(x, y_pred[0], "gaussian", np.float32(np.log(0.04)))
    np.testing.assert_allclose(float(recon), float(np.mean(expected)), rtol=1e-5)
    # above the floor, σ is the learned one
    floored.log_sigma.assign(np.log(0.2))
    np.testing.assert_allclose(float(floored.effective_log_sigma()), np.log(0.2), rtol=1e-6)


def test_an_exploding_posterior_variance_gives_a_finite_loss() -> None:
    vae = gaussian_vae(0.04)
    z_log_var_layer = vae.encoder.get_layer("z_log_var")
    kernel, bias = z_log_var_layer.get_weights()
    z_log_var_layer.set_weights([np.zeros_like(kernel), np.full_like(bias, 500.0)])  # exp -> inf
    x = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    reconstruction, kl, *_ = vae.loss_terms(x, vae(x))
    assert np.isfinite(float(reconstruction)) and np.isfinite(float(kl))
    assert float(kl) > 1e6  # still a huge penalty, so training pushes the variance back down


def test_the_log_variance_clip_still_pulls_back_what_ran_past_it() -> None:
    """Clipped in value, not in gradient: KL's gradient reaches log σ² = -500 and points up."""
    import tensorflow as tf

    from pipeline.model import LOG_VAR_LIMIT, clip_keeping_gradient

    raw = tf.Variable([[-500.0, 0.5, 500.0]])
    with tf.GradientTape() as tape:
        clipped = clip_keeping_gradient(raw, LOG_VAR_LIMIT)
        kl = tf.reduce_sum(kl_divergence(tf.zeros_like(clipped), clipped))
    np.testing.assert_allclose(clipped.numpy(), [[-LOG_VAR_LIMIT, 0.5, LOG_VAR_LIMIT]])
    grad = tape.gradient(kl, raw).numpy()[0]
    # dKL/d(log σ²) = (exp(log σ²) - 1) / 2 at the clipped value: up below, down above
    np.testing.assert_allclose(grad[:2], 0.5 * (np.exp([-LOG_VAR_LIMIT, 0.5]) - 1), rtol=1e-5)
    assert grad[0] < 0 < grad[2]  # descent raises the low one and lowers the high one


JAX_STEP = """
import tempfile
from pathlib import Path
import numpy as np, keras
from omegaconf import OmegaConf
from pipeline import perceptual
from pipeline.model import VAE
from pipeline.networks import build_critic, build_model
from tests.lpips_fixtures import random_sdist
assert keras.backend.backend() == "jax"
lpips = perceptual.build_lpips(perceptual.read_checkpoint(random_sdist(Path(tempfile.mkdtemp()))))
for label, name, likelihood, size, weight in [
    ("seed", "seed", "bce_channel_mean", 16, 0.0),
    ("conv", "conv", "gaussian", 16, 0.0),
    ("conv+lpips", "conv", "gaussian", 32, 10.0),  # the default's loss: LPIPS needs >= 31 px
    ("conv+critic", "conv", "gaussian", 16, 0.0),
    ("conv+critic-samples", "conv", "gaussian", 16, 0.0),  # the critic judging decoded samples
]:
    cfg = OmegaConf.create({"name": name, "latent_dim": 4, "beta": 1.0, "widths": [8, 16], "likelihood": likelihood})
    fakes = "samples" if "samples" in label else "reconstructions"
    critic = {"critic": build_critic([8, 16], size), "adversarial_weight": 5.0, "critic_fakes": fakes} if "critic" in label else {}
    vae = VAE(*build_model(cfg, size), likelihood=likelihood, sigma_floor=0.04, perceptual=lpips, perceptual_weight=weight, **critic)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).random((8, size, size, 3)).astype("float32")
    before = [np.array(w) for w in vae.decoder.trainable_weights]
    logs = vae.train_on_batch(x, return_dict=True)
    changed = any(not np.allclose(b, np.array(w)) for b, w in zip(before, vae.decoder.trainable_weights))
    # fit() frees the model's variables while it runs, so the metrics must not read them
    fit = vae.fit(x, validation_data=(x,), epochs=1, batch_size=4, verbose=0).history
    assert np.isfinite(fit["val_loss"][0]) and np.isfinite(fit["reconstruction"][0])
    assert ("val_perceptual" in fit) == (weight > 0)
    assert ("val_critic" in fit and "adversarial" in fit) == ("critic" in label)
    print(label, "loss", float(logs["loss"]), "kl", float(logs["kl"]), "changed", changed)
"""


def test_model_and_loss_run_under_jax() -> None:
    pytest.importorskip("jax")
    env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PATH": ""}
    import os

    proc = subprocess.run(
        [sys.executable, "-c", JAX_STEP],
        capture_output=True,
        text=True,
        timeout=900,  # a guard against a hang: five compiled steps take minutes on a slow CPU
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split() for line in proc.stdout.splitlines() if " loss " in line]
    assert [line[0] for line in lines] == [
        "seed",
        "conv",
        "conv+lpips",
        "conv+critic",
        "conv+critic-samples",
    ]
    for line in lines:
        # a finite loss and a real gradient step
        assert np.isfinite(float(line[2])) and line[-1] == "True"


def test_weight_ema_is_what_training_leaves_in_the_model() -> None:
    """train.ema: the optimizer keeps the average and fit() writes it into the weights at the end,
    so the saved networks are the averaged ones, not the last step's."""
    from pipeline.config import compose_config
    from pipeline.model import compiled_vae
    from pipeline.schema import validate_train_config

    cfg = compose_config(
        [
            "model.widths=[8,16]",
            "model.latent_dim=4",
            "train.ema=0.9",
            "train.steps_per_execution=1",
            "model.perceptual_weight=0",  # training knobs, on the network alone
        ]
    )
    cfg = validate_train_config(cfg, 16)
    vae = compiled_vae(cfg, 16)
    assert vae.optimizer.use_ema and vae.optimizer.ema_momentum == pytest.approx(0.9)
    x = np.random.default_rng(0).random((32, 16, 16, 3)).astype("float32")
    vae.fit(x, batch_size=8, epochs=2, verbose=0)
    ema = [np.asarray(v) for v in vae.optimizer._model_variables_moving_average]
    trained = [np.asarray(w) for w in vae.trainable_variables]
    assert len(ema) == len(trained)
    for a, w in zip(ema, trained, strict=True):
        np.testing.assert_allclose(w, a, rtol=1e-6)


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_ema_outside_zero_one_is_one_clear_error(value: float) -> None:
    from pipeline.config import compose_config
    from pipeline.schema import validate_train_config

    with pytest.raises(PipelineError, match=r"train.ema=.* must be a number in \[0, 1\)"):
        validate_train_config(compose_config([f"train.ema={value}", NO_LPIPS]), 64)


def test_weight_decay_shrinks_only_the_encoders_and_decoders_kernels() -> None:
    """train.weight_decay: decoupled (AdamW), so one step moves each decayed kernel by exactly
    -lr·decay·w beyond the same step without decay; biases, σ and the critic are not decayed."""
    from pipeline.config import compose_config
    from pipeline.model import compiled_vae
    from pipeline.schema import validate_train_config

    def vae_with(decay: float):
        tiny = ["model.widths=[8,16]", "model.latent_dim=4", NO_LPIPS, "train.lr_schedule=constant"]
        critic = ["model.adversarial_weight=1", "model.critic_widths=[8]"]
        overrides = [*tiny, *critic, "train.steps_per_execution=1", f"train.weight_decay={decay}"]
        return compiled_vae(validate_train_config(compose_config(overrides), 16), 16)

    plain, decayed = vae_with(0.0), vae_with(100.0)
    decayed.set_weights(plain.get_weights())
    start = [np.array(w) for w in plain.trainable_weights]
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype(np.float32)
    plain.train_on_batch(x)
    decayed.train_on_batch(x)
    nets = {id(w) for net in (decayed.encoder, decayed.decoder) for w in net.trainable_weights}
    shrunk = 0
    for w0, a, b in zip(start, plain.trainable_weights, decayed.trainable_weights, strict=True):
        step = 5e-4 * 100.0 * w0 if id(b) in nets and b.name == "kernel" else 0.0
        np.testing.assert_allclose(np.array(b), np.array(a) - step, rtol=1e-4, atol=1e-6)
        shrunk += bool(np.any(step))
    # the encoder's two convs, z_mean and z_log_var; the decoder's Dense, two transposed convs
    # and its output conv
    assert shrunk == 8
    assert decayed.critic is not None and plain.optimizer.weight_decay is None


@pytest.mark.parametrize("value", [-0.1, float("nan")])
def test_bad_weight_decay_is_one_clear_error(value: float) -> None:
    from pipeline.config import compose_config
    from pipeline.schema import validate_train_config

    with pytest.raises(PipelineError, match=r"train.weight_decay=.* must be a finite number >= 0"):
        validate_train_config(compose_config([f"train.weight_decay={value}", NO_LPIPS]), 64)


def test_cosine_schedule_anneals_to_zero_over_the_run() -> None:
    from pipeline.model import learning_rate

    constant = OmegaConf.create({"learning_rate": 1e-3, "epochs": 10, "lr_schedule": "constant"})
    assert learning_rate(constant, 7) == 1e-3
    cosine = learning_rate(OmegaConf.merge(constant, {"lr_schedule": "cosine"}), 7)
    at = [float(cosine(step)) for step in (0, 35, 70)]  # start, half way (epoch 5 of 10), end
    np.testing.assert_allclose(at, [1e-3, 5e-4, 0.0], atol=1e-9)


def test_cosine_schedule_drives_the_optimizer_step() -> None:
    """The rate the optimizer applies falls as its iterations advance (one schedule for the run)."""
    from pipeline.config import compose_config
    from pipeline.model import compiled_vae
    from pipeline.schema import validate_train_config

    cfg = compose_config(
        [
            "model.widths=[8,16]",
            "model.latent_dim=4",
            "train.lr_schedule=cosine",
            "train.epochs=2",
            NO_LPIPS,
        ]
    )
    vae = compiled_vae(validate_train_config(cfg, 16), 16, steps_per_epoch=3)
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype(np.float32)
    rates = []
    for _ in range(6):
        rates.append(float(keras.ops.convert_to_numpy(vae.optimizer.learning_rate)))
        vae.train_on_batch(x)
    assert rates[0] == pytest.approx(cfg.train.learning_rate)
    assert all(a > b for a, b in itertools.pairwise(rates)) and rates[-1] > 0


def test_unknown_lr_schedule_is_one_clear_error() -> None:
    from pipeline.config import compose_config
    from pipeline.schema import validate_train_config

    with pytest.raises(
        PipelineError, match=r"train.lr_schedule='step' is invalid.*constant or cosine"
    ):
        validate_train_config(compose_config(["train.lr_schedule=step", NO_LPIPS]), 64)


def test_the_perceptual_term_enters_the_loss_with_its_weight_and_trains(tmp_path) -> None:
    import pickle

    from pipeline import perceptual
    from tests.lpips_fixtures import random_tree, sdist_with

    source = sdist_with(tmp_path, pickle.dumps(random_tree()))
    lpips = perceptual.build_lpips(perceptual.read_checkpoint(source))
    keras.utils.set_random_seed(0)
    encoder, decoder = build_model(model_cfg(name="conv", latent_dim=4, widths=[8, 16]), 32)
    vae = VAE(encoder, decoder, likelihood="gaussian", perceptual=lpips, perceptual_weight=50.0)
    x = np.random.default_rng(0).random((8, 32, 32, 3)).astype(np.float32)
    y_pred = vae(x)
    reconstruction, kl, distance = vae.loss_terms(x, y_pred)[:3]
    expected = np.mean(lpips.predict([x, np.asarray(y_pred[0])], verbose=0))
    np.testing.assert_allclose(float(distance), expected, rtol=1e-5)
    loss = vae.compute_loss(x, y_pred=y_pred)
    np.testing.assert_allclose(
        float(loss), float(reconstruction) + 50.0 * expected + float(kl), rtol=1e-5
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = vae.train_on_batch(x, return_dict=True)
    assert "perceptual" in logs and np.isfinite(logs["perceptual"])
    assert not any("lpips" in w.path or "conv0" in w.path for w in vae.trainable_weights)
    # without a weight the term and its metric are gone
    plain = VAE(encoder, decoder, likelihood="gaussian", perceptual=lpips, perceptual_weight=0.0)
    assert plain.perceptual is None and plain.loss_terms(x, y_pred)[2] == 0.0


@pytest.mark.parametrize(
    ("weight", "message"),
    [(-1.0, "must be a finite number >= 0"), (float("nan"), "must be a finite number >= 0")],
)
def test_bad_perceptual_weight_is_one_clear_error(weight: float, message: str) -> None:
    with pytest.raises(PipelineError, match=f"model.perceptual_weight=.* {message}"):
        validate_model_config(model_cfg(perceptual_weight=weight), 64)


def test_a_perceptual_term_without_its_weights_file_stops_before_any_work(tmp_path) -> None:
    cfg = model_cfg(perceptual_weight=10.0, perceptual_weights=str(tmp_path / "none.npz"))
    with pytest.raises(
        PipelineError,
        match=r"none\.npz do not exist: fetch and convert them with `python -m pipeline.lpips`",
    ):
        validate_model_config(cfg, 64)
    # images LPIPS's AlexNet would pool away (a floating-point crash in oneDNN otherwise)
    with pytest.raises(PipelineError, match="needs images of at least 31 px"):
        validate_model_config(cfg, 16)


def critic_vae(weight: float, fakes: str = "reconstructions") -> tuple[VAE, np.ndarray]:
    keras.utils.set_random_seed(0)
    encoder, decoder = build_model(model_cfg(name="conv", latent_dim=4, widths=[8, 16]), 16)
    vae = VAE(
        encoder,
        decoder,
        likelihood="gaussian",
        seed=0,
        critic=build_critic([8, 16], 16),
        adversarial_weight=weight,
        critic_fakes=fakes,
    )
    return vae, np.random.default_rng(0).random((8, 16, 16, 3)).astype(np.float32)


def test_the_critic_learns_only_from_its_hinge_loss_and_the_decoder_from_its_pull() -> None:
    import tensorflow as tf

    vae, x = critic_vae(7.0)
    critic, decoder = vae.critic.trainable_variables, vae.decoder.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        y_pred = vae(x, training=True)
        loss = vae.compute_loss(x, y_pred=y_pred)
        terms = vae.loss_terms(x, y_pred)
        x_hat = y_pred[0]
        hinge = critic_hinge(vae.critic(x), vae.critic(tf.stop_gradient(x_hat)))
        without = terms[0] + vae.beta * terms[1]  # the same loss with no critic in it
        pull = -tf.reduce_mean(vae.critic(x_hat))
    # the critic's weights get exactly its hinge loss's gradient, nothing of the decoder's term
    for got, want in zip(tape.gradient(loss, critic), tape.gradient(hinge, critic), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # the decoder gets the VAE's gradient plus λ times that of −critic(x̂), and no hinge loss
    grads = zip(
        tape.gradient(loss, decoder),
        tape.gradient(without, decoder),
        tape.gradient(pull, decoder),
        strict=True,
    )
    for got, vae_part, pull_part in grads:
        np.testing.assert_allclose(got, vae_part + 7.0 * pull_part, rtol=1e-4, atol=1e-4)
    assert any(np.abs(g).max() > 0 for g in tape.gradient(pull, decoder))
    # the term itself weighs nothing: the loss is the VAE's plus the critic's hinge loss
    np.testing.assert_allclose(float(loss), float(without + hinge), rtol=1e-5)
    np.testing.assert_allclose(float(terms[4]), float(pull), rtol=1e-5)


def test_a_train_step_with_a_critic_moves_both_players_and_reports_their_terms() -> None:
    vae, x = critic_vae(3.0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [np.array(w) for w in (*vae.critic.trainable_weights, *vae.decoder.trainable_weights)]
    logs = vae.train_on_batch(x, return_dict=True)
    after = [np.array(w) for w in (*vae.critic.trainable_weights, *vae.decoder.trainable_weights)]
    n = len(vae.critic.trainable_weights)
    assert any(not np.allclose(b, a) for b, a in zip(before[:n], after[:n], strict=True))
    assert any(not np.allclose(b, a) for b, a in zip(before[n:], after[n:], strict=True))
    assert np.isfinite(logs["critic"]) and np.isfinite(logs["adversarial"])
    # a random critic sits near the hinge's margin: its loss is about 1 before it has learned
    assert 0.5 < logs["critic"] < 1.5
    plain, _ = critic_vae(0.0)
    assert plain.critic is None and "critic" not in {m.name for m in plain.metrics}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"adversarial_weight": -1.0}, "model.adversarial_weight=-1.0 must be a finite number"),
        ({"adversarial_weight": float("inf")}, "must be a finite number >= 0"),
        ({"adversarial_weight": 1.0, "critic_widths": []}, "model.critic_widths=.. must be"),
        ({"adversarial_weight": 1.0, "critic_widths": [8, 0]}, "must be one or more positive"),
        (
            {"adversarial_weight": 1.0, "critic_widths": [8] * 7},
            "one per halving of the 64px image .so at most 6.",
        ),
        (
            {"adversarial_weight": 1.0, "critic_fakes": "prior"},
            "model.critic_fakes='prior' is unknown: choose one of reconstructions, samples",
        ),
    ],
)
def test_bad_critic_values_are_one_clear_error(kw: dict, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        validate_model_config(model_cfg(name="conv", widths=[8, 16, 32], **kw), 64)


def test_sample_codes_have_the_batch_codes_mean_and_covariance_and_lie_in_their_span() -> None:
    vae, _ = critic_vae(1.0, "samples")
    rng = np.random.default_rng(1)
    # 6 codes in 4 dimensions with unequal spreads and a correlation, as a trained encoder's are
    codes = rng.standard_normal((6, 4)) @ np.diag([3.0, 1.0, 0.3, 0.1]) + [1.0, -2.0, 0.0, 5.0]
    codes = codes.astype(np.float32)
    draws = np.concatenate([np.asarray(vae.sample_codes(codes)) for _ in range(1000)])
    assert draws.shape == (6000, 4)
    # within 4 standard errors of the batch's mean, and its covariance to sampling error
    error = 4 * codes.std(axis=0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - codes.mean(axis=0)) < error)
    np.testing.assert_allclose(np.cov(draws.T), np.cov(codes.T), rtol=0.12, atol=0.02)
    # every draw is the codes' mean plus a combination of the centred codes: nowhere else
    centred = codes - codes.mean(axis=0)
    coef, *_ = np.linalg.lstsq(centred.T, (draws[:50] - codes.mean(axis=0)).T, rcond=None)
    np.testing.assert_allclose(centred.T @ coef, (draws[:50] - codes.mean(axis=0)).T, atol=1e-4)


def test_a_critic_on_samples_pulls_the_decoder_never_the_encoder() -> None:
    """model.critic_fakes=samples: the critic judges faces decoded from drawn codes, and its pull
    trains the decoder only; the encoder's gradient is the VAE's own."""
    import tensorflow as tf

    vae, x = critic_vae(7.0, "samples")
    encoder, decoder = vae.encoder.trainable_variables, vae.decoder.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        y_pred = vae(x, training=True)
        loss = vae.compute_loss(x, y_pred=y_pred)
        terms = vae.loss_terms(x, y_pred)
        without = terms[0] + vae.beta * terms[1]
    x_hat, *_, fake = y_pred
    # the faces judged are not the reconstructions
    assert not np.allclose(np.asarray(fake), np.asarray(vae.critic(x_hat)), atol=1e-3)
    for got, want in zip(
        tape.gradient(loss, encoder), tape.gradient(without, encoder), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    pulled = zip(tape.gradient(loss, decoder), tape.gradient(without, decoder), strict=True)
    assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4 for a, b in pulled)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = vae.train_on_batch(x, return_dict=True)
    assert np.isfinite(logs["critic"]) and 0.5 < logs["critic"] < 1.5
