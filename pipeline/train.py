"""train stage: fit the VAE on the train split, validate each epoch, checkpoint, track in MLflow.

    python -m pipeline.train                                   # the baseline (conf/)
    python -m pipeline.train model=seed train.epochs=10         # any knob
    python -m pipeline.train --multirun model.latent_dim=64,128 model.beta=0.5,1   # a sweep

A run killed at any point continues from its last completed epoch when started again with the same
config (train.resume=true): same MLflow run, every epoch's metrics logged exactly once.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import platform
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import keras
import mlflow
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline import artifacts, generator, sampler, tracking
from pipeline.atomic import write_text_atomic
from pipeline.callbacks import METRICS, EpochEnd, Schedule
from pipeline.card import model_card
from pipeline.checkpoint import (
    Checkpoint,
    Terminated,
    TerminationGuard,
    checkpoint_lock,
    fingerprint,
)
from pipeline.checksums import file_sha256
from pipeline.dataset import Faces, TrainingInput, batches, load_faces, to_float
from pipeline.device import (
    describe_device,
    distribution_scope,
    resolve_device_settings,
    set_numerics,
)
from pipeline.errors import PipelineError, exit_on_pipeline_error
from pipeline.model import VAE, compiled_vae
from pipeline.schema import validate_train_config

log = logging.getLogger(__name__)
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


def train(
    cfg: DictConfig,
    faces: Faces,
    data_version: str,
    models_dir: Path,
    reports_dir: Path | None,
    run_name: str,
    sweep: tuple[Path, str] | None = None,
    data_source: str = "data/prepared/faces.npz",
) -> TrainResult:
    """Train (or resume) one configuration; everything it makes goes to MLflow and models_dir."""
    cfg = validate_train_config(cfg, faces.image_size)
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

    with distribution_scope():
        steps = math.ceil(len(train_faces.images) / cfg.train.batch_size)
        vae = compiled_vae(cfg, faces.image_size, steps_per_epoch=steps)

    ckpt_dir = models_dir / "checkpoints" / fingerprint(cfg, data_version)
    # one training per checkpoint folder: a second one with the same config stops here
    with checkpoint_lock(ckpt_dir):
        experiment_id = tracking.setup(cfg.tracking)
        ckpt = Checkpoint.load(ckpt_dir) if cfg.train.resume else None
        if ckpt is not None and ckpt.epoch >= cfg.train.epochs and run_finished(ckpt.run_id):
            log.info("checkpoint %s is a finished run: starting a new one", ckpt_dir)
            ckpt = None
        if ckpt is not None:
            ckpt.restore(vae)
            log.info("resuming from epoch %d (checkpoint %s)", ckpt.epoch, ckpt_dir)
        else:
            ckpt = Checkpoint(ckpt_dir)
        resumed_from = ckpt.epoch

        parent = tracking.sweep_parent(experiment_id, *sweep) if sweep else None
        tags = {
            "git_commit": tracking.git_commit(),
            "data_version": data_version[:16],
            "device": device,
            "backend": keras.backend.backend(),
            "model": cfg.model.name,
            "fingerprint": ckpt_dir.name,
            "host": platform.node(),
        }
        node = ray_node()
        if node:  # a sweep job on Ray: which node of the cluster ran it
            tags["ray_node"] = node
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
        run_kwargs["log_system_metrics"] = bool(cfg.tracking.system_metrics)
        fixed_noise = (
            np.random.default_rng(cfg.train.seed)
            .standard_normal((64, cfg.model.latent_dim))
            .astype("float32")
        )
        with tracking.active_run(**run_kwargs) as run:
            if not ckpt.run_id:
                ckpt.run_id = run.info.run_id
                mlflow.log_params(tracking.params(cfg, ("model", "train", "sampler")))
                # the data as read, not the composed data.* config (which need not be what
                # produced the prepared file: a subset, another source, an older prepare)
                mlflow.log_params(data_params(faces))
                mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
                mlflow.log_param("data.version", data_version)
                tracking.log_dataset(train_faces.images, data_version, data_source, "training")
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
                        train_faces.images,
                        cfg.train.batch_size,
                        cfg.train.seed,
                        cfg.train.epochs,
                        hflip=cfg.train.hflip,
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
                            Schedule(cfg),
                            EpochEnd(
                                cfg,
                                ckpt,
                                len(train_faces.images),
                                fixed_noise,
                                guard,
                                train_faces.images,
                            ),
                        ],
                        verbose=2,
                    )
                elif vae.optimizer.use_ema:
                    # every epoch was done but the run died while saving: fit() would have
                    # written the weight average into the model when it ended, so do that here
                    vae.optimizer.finalize_variable_values(vae.trainable_variables)
            finish(cfg, vae, train_faces, val_faces, ckpt.history, models_dir, reports_dir)
        return TrainResult(ckpt.run_id, ckpt.history, models_dir, resumed_from)


def data_params(faces: Faces) -> dict[str, Any]:
    """What the prepared file holds: counts per split, people, image size, attribute columns."""
    params: dict[str, Any] = {
        "data.images": len(faces.images),
        "data.people": len(set(faces.person.tolist())),
        "data.image_size": faces.image_size,
        "data.attributes": len(faces.attribute_names),
    }
    for split in ("train", "val", "test"):
        params[f"data.{split}_images"] = int((faces.split == split).sum())
    if faces.source is not None:
        params["data.source"] = faces.source
    return params


def ray_node() -> str | None:
    """The Ray node id when this process is a Ray worker (a sweep job on Ray), else None."""
    ray = sys.modules.get("ray")  # never imported here: only a Ray worker has it loaded
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def run_finished(run_id: str | None) -> bool:
    """Whether a checkpoint's MLflow run ended well (a run that died while saving its models, after
    the last epoch, is finished by resuming it, not by training again from scratch)."""
    if not run_id:
        return True
    try:
        return mlflow.MlflowClient().get_run(run_id).info.status == "FINISHED"
    except mlflow.exceptions.MlflowException:  # not in this store: nothing to finish
        return True


def finish(
    cfg: DictConfig,
    vae: VAE,
    train_faces: Faces,
    val_faces: Faces,
    history: list[dict],
    models_dir: Path,
    reports_dir: Path | None,
) -> None:
    """Final artifacts: models and the ex-post sampler (files + MLflow), a reconstructions grid,
    the loss table."""
    shown = val_faces if len(val_faces.images) else train_faces
    z_train, z_train_log_var = vae.encoder.predict(
        to_float(train_faces.images), batch_size=256, verbose=0
    )
    card = model_card(
        cfg,
        vae,
        train_faces.images,
        z_train,
        z_train_log_var,
        mlflow.active_run().info.run_id,
        len(history),
    )
    encoder, decoder = artifacts.save_vae(cfg.model, vae.encoder, vae.decoder, card, models_dir)
    mlflow.log_dict(card, "vae.json")
    inputs = to_float(shown.images[:16])
    z_mean, _ = encoder.predict(inputs, verbose=0)
    outputs = decoder.predict(z_mean, verbose=0)
    tracking.log_image_step(
        np.concatenate([inputs, outputs]), "reconstructions", len(history), rows=2
    )
    z_val, _ = encoder.predict(to_float(shown.images), batch_size=256, verbose=0)
    mixture, scores = sampler.fit_gmm(
        z_train, z_val, list(cfg.sampler.components), cfg.sampler.seed
    )
    artifacts.log_mixture(mixture, models_dir)
    mlflow.log_metrics({f"sampler_val_loglik_k{k}": v for k, v in scores.items()})
    mlflow.log_param("sampler.chosen_components", len(mixture.weights))

    # the run's one logged model, the product: decoder + sampler (+ encoder), registered;
    # `champion` until one beats it
    register_as = cfg.tracking.register_model
    tracking.with_retries(
        lambda: generator.log_generator(models_dir, int(card["image_size"]), register_as),
        "log generator",
    )
    if register_as:
        generator.promote(register_as, mlflow.active_run().info.run_id, None)
    final = {k: history[-1][k] for k in METRICS if k in history[-1]}
    if reports_dir is not None:
        write_text_atomic(
            reports_dir / "train.json",
            json.dumps({"epochs": len(history), **final}, indent=2) + "\n",
        )
        write_history_csv(history, reports_dir / "train_history.csv")
    mlflow.log_dict({"epochs": len(history), **final}, "final_metrics.json")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_pipeline_error
def main(cfg: DictConfig) -> dict:
    log.info(
        "train config:\n%s",
        OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, ["model", "train", "tracking"])),
    )
    path = Path(hydra.utils.to_absolute_path(cfg.paths.prepared)) / "faces.npz"
    faces = load_faces(path)
    hc = HydraConfig.get()
    models_dir = Path(hydra.utils.to_absolute_path(cfg.paths.models))
    reports_dir: Path | None = Path(hydra.utils.to_absolute_path(cfg.paths.reports))
    sweep = None
    if hc.mode == RunMode.MULTIRUN:  # each job keeps its own models; DVC's stay the baseline's
        models_dir, reports_dir = (
            Path(hc.runtime.output_dir) / "models",
            Path(hc.runtime.output_dir) / "reports",
        )
        sweep = (Path(hc.sweep.dir), Path(hc.sweep.dir).name)
    try:
        result = train(
            cfg,
            faces,
            file_sha256(path),
            models_dir,
            reports_dir,
            tracking.run_name_from_hydra(cfg),
            sweep,
            str(path),
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
