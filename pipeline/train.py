"""train stage: fit the VAE on the train split, validate each epoch, checkpoint, track in MLflow.

    python -m pipeline.train                                   # the baseline (conf/)
    python -m pipeline.train model=seed train.epochs=10         # any knob
    python -m pipeline.train --multirun model.latent_dim=64,128 model.beta=0.5,1   # a sweep

A run killed at any point continues from its last completed epoch when started again with the same
config (train.resume=true): same MLflow run, every epoch's metrics logged exactly once.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import keras
import mlflow
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline import tracking
from pipeline.atomic import atomic_dir, atomic_path, write_text_atomic
from pipeline.dataset import Faces, TrainingInput, batches, file_digest, load_faces, to_float
from pipeline.errors import PipelineError, exit_on_pipeline_error
from pipeline.fused_adam import FusedAdam
from pipeline.model import FLOAT32_LAYERS, VAE, build_model, validate_model_config

log = logging.getLogger(__name__)
METRICS = ("loss", "reconstruction", "kl", "val_loss", "val_reconstruction", "val_kl")


class TrainingDiverged(PipelineError):
    pass


# --------------------------------------------------------------------------- config


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


def fingerprint(cfg: DictConfig, data_version: str) -> str:
    """What makes two trainings the same: model and train settings (not resume) plus the data."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings["train"] = {k: v for k, v in settings["train"].items() if k != "resume"}
    blob = json.dumps(
        {"model": settings["model"], "train": settings["train"], "data": data_version},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- device


def describe_device() -> str:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return (
            f"tensorflow: {len(gpus)} GPU ({', '.join(g.name for g in gpus)})"
            if gpus
            else "tensorflow: CPU"
        )
    if backend == "jax":
        import jax

        devices = jax.devices()
        return f"jax: {len(devices)} x {devices[0].device_kind}"
    return backend


def cpu_has_bfloat16() -> bool:
    """AVX-512 BF16 or AMX: bfloat16 matmuls run at about twice the float32 rate (oneDNN)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_has_bfloat16() -> bool:
    """Ampere (compute capability 8.0) and newer have bfloat16 tensor cores."""
    if keras.backend.backend() == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return bool(gpus) and float(getattr(gpus[0], "compute_capability", "0")) >= 8.0
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
        return details.get("compute_capability", (0, 0)) >= (8, 0)
    return False


def resolve_device_settings(cfg: DictConfig) -> DictConfig:
    """A copy of cfg with every `auto` speed switch replaced by what this device does best.

    The resolved values are what gets logged and fingerprinted, so a run says what it really did.
    - mixed_precision: bfloat16 where the hardware has fast bfloat16, else off. On this project's
      AVX-512 BF16 CPU, bfloat16 plus the fused Adam train `seed` 2.0x faster than the notebook's
      float32 step, at the same validation loss (benchmarks/train_speed.py). Weights, optimizer
      state and the loss stay float32 either way.
    - fused_adam: on under TensorFlow (one kernel per weight); JAX's XLA step fuses it anyway.
    """
    cfg = copy.deepcopy(cfg)
    t = cfg.train
    if t.mixed_precision == "auto":
        on_gpu = gpu_count() > 0
        fast = (
            gpu_has_bfloat16()
            if on_gpu
            else (keras.backend.backend() == "tensorflow" and cpu_has_bfloat16())
        )
        t.mixed_precision = "bfloat16" if fast else False
    if t.fused_adam == "auto":
        t.fused_adam = keras.backend.backend() == "tensorflow"
    return cfg


def gpu_count() -> int:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return sum(d.platform == "gpu" for d in jax.devices())
    return 0


def distribution_scope(cfg: DictConfig) -> Any:
    """Data parallelism over every visible GPU; a no-op context on one device."""
    import contextlib

    n = gpu_count()
    if n > 1 and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        log.info("data parallel over %d GPUs (MirroredStrategy)", n)
        return tf.distribute.MirroredStrategy().scope()
    if n > 1 and keras.backend.backend() == "jax":
        log.info("data parallel over %d devices (keras.distribution.DataParallel)", n)
        keras.distribution.set_distribution(keras.distribution.DataParallel())
    return contextlib.nullcontext()


def set_numerics(cfg: DictConfig) -> None:
    """Seeds, op determinism and the precision policy, from a clean Keras state (a sweep runs
    several jobs in one process)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    policy = f"mixed_{cfg.train.mixed_precision}" if cfg.train.mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(policy)


def compiled_vae(cfg: DictConfig, image_size: int) -> VAE:
    """The model, optimizer and compiled step that training uses (the benchmark uses it too)."""
    encoder, decoder = build_model(cfg.model, image_size, list(cfg.train.float32_layers))
    vae = VAE(encoder, decoder, cfg.model.beta, cfg.model.likelihood, seed=cfg.train.seed)
    adam = FusedAdam if cfg.train.fused_adam else keras.optimizers.Adam
    vae.compile(
        optimizer=adam(cfg.train.learning_rate),
        steps_per_execution=cfg.train.steps_per_execution,
        jit_compile=cfg.train.jit_compile,
    )
    vae(np.zeros((1, image_size, image_size, 3), np.float32))  # build every variable
    return vae


# --------------------------------------------------------------------------- termination


class Terminated(BaseException):  # like KeyboardInterrupt: a request to stop, not an error
    """SIGTERM arrived: training stops after any checkpoint write in progress has finished."""


class TerminationGuard:
    """SIGTERM (a spot instance reclaimed, `kill`, a scheduler's timeout) stops training at once,
    except while a checkpoint is being written: then it waits for the write to finish."""

    def __init__(self) -> None:
        self.writing = False
        self.pending: int | None = None
        self.previous: Any = None

    def __enter__(self) -> TerminationGuard:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def handle(self, signum: int, frame: object) -> None:
        if self.writing:
            self.pending = signum
            return
        raise Terminated(f"stopped by signal {signum}")

    def writing_checkpoint(self) -> Any:
        guard = self

        class _Writing:
            def __enter__(self) -> None:
                guard.writing = True

            def __exit__(self, *exc: object) -> None:
                guard.writing = False
                if guard.pending is not None and exc[0] is None:
                    raise Terminated(
                        f"stopped by signal {guard.pending} after writing the checkpoint"
                    )

        return _Writing()


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """models/checkpoints/<fingerprint>/: weights with optimizer slots, and the history so far."""

    folder: Path
    epoch: int = 0
    run_id: str | None = None
    history: list[dict] = field(default_factory=list)
    noise_state: list[int] | None = None

    def save(self, model: keras.Model) -> None:
        with atomic_dir(
            self.folder
        ) as tmp:  # a kill mid-write leaves the previous checkpoint whole
            model.save_weights(tmp / "model.weights.h5")  # Keras 3 stores the optimizer's slots too
            # the reparameterisation noise's RNG state is not a weight: keep it so a resume is exact
            noise = np.asarray(model.noise.state.numpy()).tolist()
            (tmp / "state.json").write_text(
                json.dumps(
                    {
                        "epoch": self.epoch,
                        "run_id": self.run_id,
                        "history": self.history,
                        "noise_state": noise,
                    }
                )
            )

    @classmethod
    def load(cls, folder: Path) -> Checkpoint | None:
        try:
            state = json.loads((folder / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(
            folder, state["epoch"], state["run_id"], state["history"], state.get("noise_state")
        )

    def restore(self, model: keras.Model) -> None:
        model.optimizer.build(model.trainable_variables)  # slots must exist to receive their values
        model.load_weights(self.folder / "model.weights.h5")
        if self.noise_state is not None:
            model.noise.state.assign(np.asarray(self.noise_state, dtype=model.noise.state.dtype))


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
    ) -> None:
        super().__init__()
        self.cfg, self.ckpt, self.n_train, self.fixed_noise = cfg, ckpt, n_train, fixed_noise
        self.guard = guard or TerminationGuard()
        self.started = self.validation_started = 0.0

    def beta_at(self, epoch: int) -> float:
        warmup = self.cfg.train.kl_warmup_epochs
        return float(self.cfg.model.beta) * (min(1.0, (epoch + 1) / warmup) if warmup else 1.0)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.beta.assign(self.beta_at(epoch))
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
            "beta": self.beta_at(epoch),
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
            faces = np.asarray(self.model.decoder.predict(self.fixed_noise, verbose=0), np.float32)
            tracking.log_grid(faces, f"samples/epoch_{epoch + 1:03d}.png")
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


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    run_id: str
    history: list[dict]
    models_dir: Path
    resumed_from: int


def write_history_csv(history: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buf.getvalue())


def save_keras(model: keras.Model, path: Path) -> None:
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def train(
    cfg: DictConfig,
    faces: Faces,
    data_version: str,
    models_dir: Path,
    reports_dir: Path | None,
    run_name: str,
    sweep: tuple[Path, str] | None = None,
) -> TrainResult:
    """Train (or resume) one configuration; everything it makes goes to MLflow and models_dir."""
    validate_train_config(cfg, faces.image_size)
    cfg = resolve_device_settings(cfg)
    set_numerics(cfg)

    train_faces, val_faces = faces.subset("train"), faces.subset("val")
    if len(train_faces.images) == 0:
        raise PipelineError("the prepared file has no train split: check data.prepare.split")
    device = describe_device()
    log.info(
        "device: %s; %d train / %d val faces; compute %s, fused Adam %s, %d steps per call, XLA %s",
        device,
        len(train_faces.images),
        len(val_faces.images),
        cfg.train.mixed_precision or "float32",
        cfg.train.fused_adam,
        cfg.train.steps_per_execution,
        cfg.train.jit_compile,
    )

    with distribution_scope(cfg):
        vae = compiled_vae(cfg, faces.image_size)

    ckpt_dir = models_dir / "checkpoints" / fingerprint(cfg, data_version)
    ckpt = Checkpoint.load(ckpt_dir) if cfg.train.resume else None
    if ckpt is not None and ckpt.epoch >= cfg.train.epochs:
        log.info("checkpoint %s is a finished run: starting a new one", ckpt_dir)
        ckpt = None
    if ckpt is not None:
        ckpt.restore(vae)
        log.info("resuming from epoch %d (checkpoint %s)", ckpt.epoch, ckpt_dir)
    else:
        ckpt = Checkpoint(ckpt_dir)
    resumed_from = ckpt.epoch

    experiment_id = tracking.setup(cfg.tracking)
    parent = tracking.sweep_parent(experiment_id, *sweep) if sweep else None
    tags = {
        "git_commit": tracking.git_commit(),
        "data_version": data_version[:16],
        "device": device,
        "backend": keras.backend.backend(),
        "model": cfg.model.name,
        "fingerprint": ckpt_dir.name,
    }
    if sweep:
        tags["sweep"] = sweep[1]
    run_kwargs: dict[str, Any] = (
        {"run_id": ckpt.run_id}
        if ckpt.run_id
        else {
            "experiment_id": experiment_id,
            "run_name": run_name,
            "tags": tags,
            "parent_run_id": parent,
        }
    )
    fixed_noise = (
        np.random.default_rng(cfg.train.seed)
        .standard_normal((64, cfg.model.latent_dim))
        .astype("float32")
    )
    with tracking.with_retries(lambda: mlflow.start_run(**run_kwargs), "start run") as run:
        if not ckpt.run_id:
            ckpt.run_id = run.info.run_id
            mlflow.log_params(tracking.flatten(cfg, ("data", "model", "train")))
            mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
            mlflow.log_param("data.version", data_version)
        else:  # epochs checkpointed but not yet logged when the last process died
            done = tracking.logged_steps(run.info.run_id, "loss")
            for row in ckpt.history:
                if row["epoch"] not in done:
                    mlflow.log_metrics(
                        {k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"]
                    )

        with TerminationGuard() as guard:
            if resumed_from < cfg.train.epochs:
                feed = TrainingInput(
                    train_faces.images, cfg.train.batch_size, cfg.train.seed, cfg.train.epochs
                )
                vae.fit(
                    feed.data,
                    epochs=cfg.train.epochs,
                    initial_epoch=resumed_from,
                    validation_data=batches(val_faces.images, cfg.train.batch_size)
                    if len(val_faces.images)
                    else None,
                    callbacks=[
                        feed.callback,
                        EpochEnd(cfg, ckpt, len(train_faces.images), fixed_noise, guard),
                    ],
                    verbose=2,
                )
        finish(
            cfg,
            vae,
            val_faces if len(val_faces.images) else train_faces,
            ckpt.history,
            models_dir,
            reports_dir,
        )
    return TrainResult(ckpt.run_id, ckpt.history, models_dir, resumed_from)


def finish(
    cfg: DictConfig,
    vae: VAE,
    shown: Faces,
    history: list[dict],
    models_dir: Path,
    reports_dir: Path | None,
) -> None:
    """Final artifacts: models (files + MLflow), a reconstructions grid, the loss table."""
    encoder, decoder = float32_networks(cfg.model, vae.encoder, vae.decoder, shown.image_size)
    save_keras(encoder, models_dir / "encoder.keras")
    save_keras(decoder, models_dir / "decoder.keras")
    # what evaluation needs beside the two networks: the likelihood and its learned σ, and the run
    card = {
        "run_id": mlflow.active_run().info.run_id,
        "model": cfg.model.name,
        "latent_dim": cfg.model.latent_dim,
        "beta": float(cfg.model.beta),
        "likelihood": cfg.model.likelihood,
        "image_size": shown.image_size,
        "log_sigma": None if vae.log_sigma is None else float(np.asarray(vae.log_sigma.numpy())),
        "epochs": len(history),
    }
    write_text_atomic(models_dir / "vae.json", json.dumps(card, indent=2) + "\n")
    mlflow.log_dict(card, "vae.json")
    inputs = to_float(shown.images[:16])
    z_mean, _ = encoder.predict(inputs, verbose=0)
    outputs = decoder.predict(z_mean, verbose=0)
    tracking.log_grid(np.concatenate([inputs, outputs]), "reconstructions.png", rows=2)

    from mlflow.models import infer_signature

    z = np.zeros((2, cfg.model.latent_dim), np.float32)
    x = to_float(shown.images[:2])
    tracking.with_retries(
        lambda: mlflow.keras.log_model(
            encoder,
            name="encoder",
            signature=infer_signature(x, encoder.predict(x, verbose=0)),
        ),
        "log encoder",
    )
    tracking.with_retries(
        lambda: mlflow.keras.log_model(
            decoder,
            name="decoder",
            signature=infer_signature(z, decoder.predict(z, verbose=0)),
            registered_model_name=cfg.tracking.register_model or None,
        ),
        "log decoder",
    )
    final = {k: history[-1][k] for k in METRICS if k in history[-1]}
    if reports_dir is not None:
        write_text_atomic(
            reports_dir / "train.json",
            json.dumps({"epochs": len(history), **final}, indent=2) + "\n",
        )
        write_history_csv(history, reports_dir / "train_history.csv")
    mlflow.log_dict({"epochs": len(history), **final}, "final_metrics.json")


def float32_networks(
    model_cfg: DictConfig, encoder: keras.Model, decoder: keras.Model, image_size: int
) -> tuple[keras.Model, keras.Model]:
    """The networks as float32 models, whatever precision trained them: saved files then evaluate
    and generate the same way on every device (and load anywhere)."""
    layers = [*encoder.layers, *decoder.layers]
    if all(layer.dtype_policy.name == "float32" for layer in layers):
        return encoder, decoder
    # left at float32 on purpose: training is over, and .keras files loaded later in this process
    # take layers without an explicit dtype from the global policy
    keras.mixed_precision.set_global_policy("float32")
    enc32, dec32 = build_model(model_cfg, image_size)
    enc32.set_weights(encoder.get_weights())
    dec32.set_weights(decoder.get_weights())
    return enc32, dec32


def run_name_from_hydra(cfg: DictConfig) -> str:
    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:
        overrides = []
    overrides = [o for o in overrides if not o.startswith(("hydra.", "tracking.", "paths."))]
    return (
        " ".join(overrides)
        or f"{cfg.model.name} z{cfg.model.latent_dim} β{cfg.model.beta} e{cfg.train.epochs}"
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_pipeline_error
def main(cfg: DictConfig) -> dict:
    log.info(
        "train config:\n%s",
        OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, ["model", "train", "tracking"])),
    )
    path = Path(hydra.utils.to_absolute_path(cfg.paths.prepared)) / "faces.npz"
    faces = load_faces(path)
    validate_train_config(cfg, faces.image_size)
    hc = HydraConfig.get()
    models_dir = Path(hydra.utils.to_absolute_path(cfg.paths.models))
    reports_dir: Path | None = Path(hydra.utils.to_absolute_path(cfg.paths.reports))
    sweep = None
    if (
        hc.mode == RunMode.MULTIRUN
    ):  # each job keeps its own models; the DVC outputs stay the baseline's
        models_dir, reports_dir = (
            Path(hc.runtime.output_dir) / "models",
            Path(hc.runtime.output_dir) / "reports",
        )
        sweep = (Path(hc.sweep.dir), Path(hc.sweep.dir).name)
    try:
        result = train(
            cfg, faces, file_digest(path), models_dir, reports_dir, run_name_from_hydra(cfg), sweep
        )
    except Terminated as stop:
        log.warning("%s; the last checkpoint is whole: rerun the same command to resume", stop)
        raise SystemExit(128 + signal.SIGTERM) from None
    log.info(
        "run %s finished: %s",
        result.run_id,
        {k: round(v, 2) for k, v in result.history[-1].items()},
    )
    return result.history[-1]


if __name__ == "__main__":
    main()
