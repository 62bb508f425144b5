"""The training run's per-epoch callbacks: the schedule (β warm-up, the critic's start), and the
NaN check, checkpoint, MLflow metrics and sample grids."""

from __future__ import annotations

import logging
import math
import time

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig

from pipeline import sampler, tracking
from pipeline.checkpoint import Checkpoint, TerminationGuard
from pipeline.dataset import to_float
from pipeline.errors import PipelineError

log = logging.getLogger("pipeline.train")
METRICS = (
    "loss",
    "reconstruction",
    "kl",
    "perceptual",  # only with a perceptual term (model.perceptual_weight > 0)
    "critic",  # these two only with a critic (model.adversarial_weight > 0): its hinge loss
    "adversarial",  # and the decoder's term, −critic(x̂)
    "val_loss",
    "val_reconstruction",
    "val_kl",
    "val_perceptual",
    "val_critic",
    "val_adversarial",
)
QUICK_CODES, QUICK_COMPONENTS = 2000, 10  # the per-epoch sample grid's mixture (EpochEnd)


class TrainingDiverged(PipelineError):
    pass


# --------------------------------------------------------------------------- the schedule


def beta_at(cfg: DictConfig, epoch: int) -> float:
    """β in epoch `epoch` (from 0): model.beta, reached linearly over train.kl_warmup_epochs."""
    warmup = cfg.train.kl_warmup_epochs
    return float(cfg.model.beta) * (min(1.0, (epoch + 1) / warmup) if warmup else 1.0)


class Schedule(keras.callbacks.Callback):
    """What the config changes between epochs: β during KL warm-up, and whether the critic and its
    pull are on (train.adversarial_start_epoch). Every loop that trains the VAE uses it (the
    pipeline and the GPU check), so a config trains the same way wherever it runs."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.beta.assign(beta_at(self.cfg, epoch))
        # a critic joins once the autoencoder has learned the faces' shapes (VQGAN's disc_start)
        if self.model.critic is not None:
            on = epoch >= self.cfg.train.adversarial_start_epoch
            self.model.adversarial_on.assign(float(on))
            if on != self.model.critic_active:
                # re-trace the steps with (or without) the critic: fit reads train_function anew
                # at every step, and the traced graph fixes whether the critic runs at all
                self.model.critic_active = on
                self.model.make_train_function(force=True)
                self.model.make_test_function(force=True)


# --------------------------------------------------------------------------- the epoch callback


class EpochEnd(keras.callbacks.Callback):
    """At each epoch's end: NaN check, checkpoint, MLflow metrics, a sample grid, one log line."""

    def __init__(
        self,
        cfg: DictConfig,
        ckpt: Checkpoint,
        n_train: int,
        fixed_noise: np.ndarray,
        guard: TerminationGuard | None = None,
        train_images: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.ckpt, self.n_train, self.fixed_noise = cfg, ckpt, n_train, fixed_noise
        # a fixed subset of the training faces for the per-epoch mixture of `log_samples`
        self.train_images = None if train_images is None else train_images[:QUICK_CODES]
        self.guard = guard or TerminationGuard()
        self.started = self.validation_started = 0.0

    def log_samples(self, step: int) -> None:
        """`samples`: faces from the sampler the model is judged by (evaluate.sampler), so the
        chart a user compares runs by shows the model's real faces; `samples_prior` beside it
        when that sampler is the mixture. The mixture here is a quick fit (one component count,
        a subset of the training codes: seconds); the saved one is chosen on validation."""
        decode = self.model.decoder.predict
        prior = np.asarray(decode(self.fixed_noise, verbose=0), np.float32)
        if self.cfg.evaluate.sampler != "gmm" or self.train_images is None:
            tracking.log_image_step(prior, "samples", step)
            return
        codes, _ = self.model.encoder.predict(to_float(self.train_images), verbose=0)
        mixture, _ = sampler.fit_gmm(codes, codes[:2], [min(QUICK_COMPONENTS, len(codes))], 0)
        z = sampler.latents(
            mixture, len(self.fixed_noise), codes.shape[1], 1.0, self.cfg.train.seed
        )
        tracking.log_image_step(np.asarray(decode(z, verbose=0), np.float32), "samples", step)
        tracking.log_image_step(prior, "samples_prior", step)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.validation_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        end = time.perf_counter()
        train_end = self.validation_started if self.validation_started > self.started else end
        seconds = end - self.started
        row = {
            "epoch": epoch + 1,
            **{k: float(logs[k]) for k in METRICS if k in logs},
            "beta": beta_at(self.cfg, epoch),
            "images_per_s": self.n_train / (train_end - self.started),
            "epoch_seconds": seconds,
        }
        bad = [k for k in METRICS if k in row and not math.isfinite(row[k])]
        if bad:
            raise TrainingDiverged(
                f"{', '.join(bad)} became {row[bad[0]]} at epoch {epoch + 1}: lower train.learning_rate "
                f"(now {self.cfg.train.learning_rate}) or model.beta; the last good checkpoint is kept"
            )
        self.ckpt.epoch, self.ckpt.history = epoch + 1, [*self.ckpt.history, row]
        with self.guard.writing_checkpoint():  # SIGTERM now waits until the checkpoint is whole
            self.ckpt.save(self.model)
        # checkpoint first, then MLflow: a kill in between is reconciled on resume (logged_steps)
        tracking.with_retries(
            lambda: mlflow.log_metrics(
                {k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1
            ),
            "metrics",
        )
        every, last = self.cfg.train.sample_every, self.cfg.train.epochs
        if (epoch + 1) % every == 0 or epoch + 1 == last:
            self.log_samples(epoch + 1)
        remaining = (last - epoch - 1) * seconds
        log.info(
            "epoch %d/%d  loss %.1f  val_loss %.1f  (recon %.1f, kl %.1f, β %.2f)  %.0f img/s  ETA %s",
            epoch + 1,
            last,
            row["loss"],
            row.get("val_loss", float("nan")),
            row["reconstruction"],
            row["kl"],
            row["beta"],
            row["images_per_s"],
            time.strftime("%H:%M:%S", time.gmtime(remaining)),
        )
