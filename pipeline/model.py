"""The VAE: the model whose loss reads like the math, its config checks and its compiled step
(the encoder/decoder builders are in networks.py).

Only `keras`, `keras.ops` and `keras.random` appear here, so the same code trains under TensorFlow
(the default) and JAX (`KERAS_BACKEND=jax`). The loss lives in `compute_loss` / `compute_metrics`
rather than a hand-written `train_step`, which is what lets each backend use its own compiled step.

Encoder and decoder are plain functional models: they save and load on their own (`.keras`), so a
decoder can generate faces without this module being importable.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from pipeline.fused_adam import FusedAdam
from pipeline.losses import critic_hinge, kl_divergence, reconstruction_nll
from pipeline.model_config import perceptual_weights_path
from pipeline.networks import CRITIC_WIDTHS, build_critic, build_model

# |log σ²| of q(z|x) is clipped here (σ from 4.5e-5 to 2.2e4), far outside anything a healthy run
# reaches: it only stops one bad step from turning exp(log σ²) into inf and every weight into NaN
LOG_VAR_LIMIT = 20.0


def clip_keeping_gradient(x: Any, limit: float) -> Any:
    """x clipped to [-limit, limit] in value, but with the gradient of x itself (straight-through):
    a plain clip has zero gradient outside the range, so an encoder output that ran past it
    would get no pull back from the KL term and stay there (measured: log σ² drifted to -1000)."""
    return x + ops.stop_gradient(ops.clip(x, -limit, limit) - x)


# --------------------------------------------------------------------------- the model


class VAE(keras.Model):
    """q(z|x) = encoder, p(x|z) = decoder; loss = reconstruction + β·KL, averaged over the batch."""

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        beta: float = 1.0,
        likelihood: str = "bce_sum",
        seed: int = 0,
        sigma_floor: float = 0.0,
        sigma: str = "learned",
        perceptual: keras.Model | None = None,
        perceptual_weight: float = 0.0,
        critic: keras.Model | None = None,
        adversarial_weight: float = 0.0,
        critic_fakes: str = "reconstructions",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        # λ·LPIPS(x, x̂) beside the likelihood: a frozen ImageNet-feature distance that rewards
        # the detail a pixel likelihood averages away (pipeline/perceptual.py)
        self.perceptual = perceptual if perceptual_weight > 0 else None
        self.perceptual_weight = float(perceptual_weight)
        # λ·(−critic(x̂)): a patch critic, trained beside the VAE to tell faces from their
        # reconstructions, pulls the decoder toward the texture that no pixel loss asks for
        self.critic = critic if adversarial_weight > 0 else None
        self.adversarial_weight = float(adversarial_weight)
        # samples: the critic judges faces decoded from new codes instead of the reconstructions,
        # so its pull lands where the sampler draws from (between the training faces' codes)
        # and leaves the reconstructions to the likelihood and LPIPS
        self.critic_on_samples = self.critic is not None and critic_fakes == "samples"
        # 0 until train.adversarial_start_epoch, then 1: the critic and its pull switch on together;
        # only with a critic, so a model without one keeps the variables, and the checkpoints, it
        # had before. `critic_active` is the same switch at trace time: while it is off the step
        # is traced without the critic at all (its forward passes cost time and add nothing), and
        # the callback that flips it re-traces the step once (pipeline/callbacks.py)
        self.adversarial_on = (
            keras.Variable(1.0, trainable=False, name="adversarial_on")
            if self.critic is not None
            else None
        )
        self.critic_active = self.critic is not None
        # optimal: σ² is the batch's mean squared error, the value that maximises the likelihood
        # (Rybkin et al.'s "optimal σ-VAE"), so σ never lags behind the reconstructions as one
        # learned weight moved by Adam does
        self.optimal_sigma = likelihood == "gaussian" and sigma == "optimal"
        # the learned σ of the Gaussian likelihood never goes below this (0 = no floor): left free,
        # σ keeps shrinking to fit the training faces ever closer, which raises the weight of
        # reconstruction over KL without bound (validation loss rises, and one run went NaN)
        self.log_sigma_floor = math.log(sigma_floor) if sigma_floor > 0 else None
        # a variable, not a constant, so KL warm-up can change it without re-tracing the step
        self.beta = keras.Variable(float(beta), trainable=False, name="beta", dtype="float32")
        self.log_sigma = (
            self.add_weight(
                shape=(), initializer=keras.initializers.Constant(-1.0), name="log_sigma"
            )
            if likelihood == "gaussian" and not self.optimal_sigma
            else None
        )
        self.noise = keras.random.SeedGenerator(seed)
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.perceptual_tracker = (
            keras.metrics.Mean(name="perceptual") if self.perceptual is not None else None
        )
        self.critic_trackers = (
            (keras.metrics.Mean(name="critic"), keras.metrics.Mean(name="adversarial"))
            if self.critic is not None
            else ()
        )

    def call(self, x: Any, training: bool = False) -> tuple[Any, ...]:
        # x̂, μ, log σ², then a learned σ, the per-face LPIPS distance and the critic's logits
        # when the model has them: computed here because JAX's compute_metrics sees no model
        # variables (σ, the LPIPS and critic networks' weights), only the metrics'
        z_mean, z_log_var = self.encoder(x, training=training)
        # the noise and z stay float32 under mixed precision; the decoder casts z to its compute dtype
        z_mean, z_log_var = ops.cast(z_mean, "float32"), ops.cast(z_log_var, "float32")
        z_log_var = clip_keeping_gradient(z_log_var, LOG_VAR_LIMIT)
        eps = keras.random.normal(ops.shape(z_mean), seed=self.noise)
        # reparameterisation: gradients flow through μ, σ
        z = z_mean + ops.exp(0.5 * z_log_var) * eps
        x_hat = self.decoder(z, training=training)
        learned = () if self.log_sigma is None else (self.effective_log_sigma(),)
        distance = (
            ()
            if self.perceptual is None
            else (self.perceptual([ops.cast(x, "float32"), ops.cast(x_hat, "float32")]),)
        )
        fakes = (
            self.decoder(self.sample_codes(z_mean), training=training)
            if self.critic_on_samples and self.critic_active
            else x_hat
        )
        return x_hat, z_mean, z_log_var, *learned, *distance, *self.critic_logits(x, fakes)

    def sample_codes(self, z_mean: Any) -> Any:
        """As many new codes as the batch has, drawn from a Gaussian with the mean and covariance
        of the batch's μ(x): z = m + W·(μ − m)/sqrt(n − 1), W's entries N(0, 1), has exactly
        that covariance. It is how the ex-post mixture samples (from a Gaussian fitted to codes),
        made per batch and without a fit. The codes are held constant, so the critic's pull on
        the faces decoded from them trains the decoder only, never where the encoder puts faces."""
        codes = ops.stop_gradient(ops.cast(z_mean, "float32"))
        n = ops.shape(codes)[0]
        mean = ops.mean(codes, axis=0, keepdims=True)
        mixing = keras.random.normal((n, n), seed=self.noise)
        scale = ops.sqrt(ops.maximum(ops.cast(n, "float32") - 1.0, 1.0))
        return mean + ops.matmul(mixing, codes - mean) / scale

    def critic_logits(self, x: Any, x_hat: Any) -> tuple[Any, ...]:
        """The critic's logits for the real faces, for the decoded faces (reconstructions or
        samples, model.critic_fakes) with the decoder cut off (they train the critic) and for the
        same faces with it attached (they train the decoder); () without a critic."""
        if not self.critic_active:
            return ()
        x, x_hat = ops.cast(x, "float32"), ops.cast(x_hat, "float32")
        both = self.critic(ops.concatenate([x, ops.stop_gradient(x_hat)], axis=0))
        real, fake_detached = ops.split(both, 2, axis=0)
        return real, fake_detached, self.critic(x_hat)

    def effective_log_sigma(self) -> Any:
        """log σ of the Gaussian likelihood as the loss uses it (the floor applied); None otherwise."""
        if self.log_sigma is None:
            return None
        # .value, not the variable: JAX's stateless step swaps values in
        log_sigma = self.log_sigma.value
        if self.log_sigma_floor is not None:
            log_sigma = ops.maximum(log_sigma, self.log_sigma_floor)
        return log_sigma

    def batch_log_sigma(self, x: Any, x_hat: Any) -> Any:
        """log σ with σ² = the batch's mean squared error (floored), held constant in the gradient:
        at the optimum the loss's slope in σ is zero, so this is the gradient of the optimal bound."""
        mse = ops.mean(ops.square(ops.cast(x, "float32") - ops.cast(x_hat, "float32")))
        log_sigma = 0.5 * ops.log(ops.maximum(mse, 1e-12))
        if self.log_sigma_floor is not None:
            log_sigma = ops.maximum(log_sigma, self.log_sigma_floor)
        return ops.stop_gradient(log_sigma)

    def loss_terms(self, x: Any, y_pred: tuple[Any, ...]) -> tuple[Any, ...]:
        """Batch means of -log p(x|z), KL, LPIPS(x, x̂) (0 without a perceptual term), and with a
        critic its hinge loss, the decoder's adversarial term −critic(x̂) and that term's
        gradient carrier (0 without one; see compute_loss)."""
        x_hat, z_mean, z_log_var, *extra = y_pred
        # a learned σ, the LPIPS distances and the critic's logits come with the forward pass
        learned = extra.pop(0) if self.log_sigma is not None else None
        log_sigma = self.batch_log_sigma(x, x_hat) if self.optimal_sigma else learned
        reconstruction = ops.mean(reconstruction_nll(x, x_hat, self.likelihood, log_sigma))
        kl = ops.mean(kl_divergence(ops.cast(z_mean, "float32"), ops.cast(z_log_var, "float32")))
        perceptual = 0.0 if self.perceptual is None else ops.mean(extra.pop(0))
        if not self.critic_active:
            return reconstruction, kl, perceptual, 0.0, 0.0, 0.0
        real, fake_detached, fake = (ops.cast(logits, "float32") for logits in extra)
        adversarial = -ops.mean(fake_detached)
        # −critic(x̂) minus its own value with the critic's weights reached only through the
        # detached copy: worth 0, its gradient reaches the decoder (through x̂) and cancels
        # exactly in the critic's weights, so the critic learns only from its hinge loss
        decoder_pull = ops.mean(fake_detached) - ops.mean(fake)
        return (
            reconstruction,
            kl,
            perceptual,
            critic_hinge(real, fake_detached),
            adversarial,
            decoder_pull,
        )

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        reconstruction, kl, perceptual, critic, _, decoder_pull = self.loss_terms(x, y_pred)
        loss = reconstruction + self.perceptual_weight * perceptual + self.beta * kl
        if self.critic is None:
            return loss
        if not self.critic_active:
            # a zero gradient, not none, for the critic's weights while it is off: the optimizer
            # keeps seeing every weight it updates later (no "gradients do not exist" warning)
            # and their Adam moments stay exactly zero, as they were when the critic ran unused
            return loss + 0.0 * sum(ops.sum(w) for w in self.critic.trainable_weights)
        # one optimizer for both players: the critic's weights see only its hinge loss, the
        # VAE's only the rest (Adam scales each weight's step by its own gradients' size)
        return loss + self.adversarial_on * (self.adversarial_weight * decoder_pull + critic)

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> dict:
        reconstruction, kl, perceptual, critic, adversarial, _ = self.loss_terms(x, y_pred)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        if self.perceptual_tracker is not None:
            self.perceptual_tracker.update_state(perceptual)
        for tracker, value in zip(self.critic_trackers, (critic, adversarial), strict=False):
            tracker.update_state(value)
        return self.get_metrics_result()


# --------------------------------------------------------------------------- the compiled step


LR_SCHEDULES = ("constant", "cosine")


def learning_rate(train_cfg: Any, steps_per_epoch: int) -> float | Any:
    """The configured rate, or a schedule of it over every step of the run. Cosine decay to zero
    anneals the last epochs, where a constant 1e-3 let the learned-σ model blow up (README)."""
    if train_cfg.get("lr_schedule", "constant") == "constant":
        return float(train_cfg.learning_rate)
    return keras.optimizers.schedules.CosineDecay(
        float(train_cfg.learning_rate), decay_steps=max(1, train_cfg.epochs * steps_per_epoch)
    )


def perceptual_term(model_cfg: Any) -> dict[str, Any]:
    """The VAE's perceptual keyword arguments: the frozen LPIPS network when its weight is > 0."""
    weight = float(model_cfg.get("perceptual_weight", 0.0))
    if weight <= 0:
        return {}
    from pipeline.perceptual import build_lpips, load_weights

    lpips = build_lpips(load_weights(perceptual_weights_path(model_cfg)))
    return {"perceptual": lpips, "perceptual_weight": weight}


def adversarial_term(model_cfg: Any, image_size: int, float32_layers: list[str]) -> dict[str, Any]:
    """The VAE's adversarial keyword arguments: a new patch critic when its weight is > 0."""
    weight = float(model_cfg.get("adversarial_weight", 0.0))
    if weight <= 0:
        return {}
    critic = build_critic(
        list(model_cfg.get("critic_widths", CRITIC_WIDTHS)), image_size, float32_layers
    )
    fakes = model_cfg.get("critic_fakes", "reconstructions")
    return {"critic": critic, "adversarial_weight": weight, "critic_fakes": fakes}


def compiled_vae(cfg: Any, image_size: int, steps_per_epoch: int = 1) -> VAE:
    """The model, optimizer and compiled step that training uses (the benchmarks use it too).

    `steps_per_epoch` sets the length of a learning-rate schedule (train.lr_schedule)."""
    encoder, decoder = build_model(cfg.model, image_size, list(cfg.train.float32_layers))
    vae = VAE(
        encoder,
        decoder,
        cfg.model.beta,
        cfg.model.likelihood,
        seed=cfg.train.seed,
        sigma_floor=float(cfg.model.get("sigma_floor", 0.0)),
        sigma=cfg.model.get("sigma", "learned"),
        **perceptual_term(cfg.model),
        **adversarial_term(cfg.model, image_size, list(cfg.train.float32_layers)),
    )
    adam = FusedAdam if cfg.train.fused_adam else keras.optimizers.Adam
    # use_ema: Keras keeps the average in the optimizer (so checkpoints carry it) and writes it
    # into the weights when fit() ends, which is what gets saved
    ema = float(cfg.train.get("ema", 0.0))
    averaging = {"use_ema": True, "ema_momentum": ema} if ema > 0 else {}
    # decoupled weight decay (Loshchilov & Hutter's AdamW; Keras applies it before each update):
    # each decayed kernel shrinks by lr·weight_decay per step, the pull a regulariser adds without
    # changing the data as mirroring does
    decay = float(cfg.train.get("weight_decay", 0.0))
    optimizer = adam(
        learning_rate(cfg.train, steps_per_epoch), weight_decay=decay or None, **averaging
    )
    vae.compile(
        optimizer=optimizer,
        steps_per_execution=cfg.train.steps_per_execution,
        jit_compile=cfg.train.jit_compile,
    )
    # build every variable. The critic, a functional model, is built already, so this call leaves
    # it out: a critic on samples would draw codes here, and its run's noise would then differ
    # from a run without one before the critic ever starts
    active, vae.critic_active = vae.critic_active, False
    vae(ops.zeros((1, image_size, image_size, 3)))
    vae.critic_active = active
    if decay:  # only the encoder's and decoder's kernels: not biases, σ or the critic
        kernels = {id(w) for net in (encoder, decoder) for w in net.trainable_weights}
        kernels &= {id(w) for w in vae.trainable_weights if w.name == "kernel"}
        kept = [w for w in vae.trainable_weights if id(w) not in kernels]
        optimizer.exclude_from_weight_decay(var_list=kept)
    return vae
