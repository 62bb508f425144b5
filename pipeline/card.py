"""The model card: what evaluation and generation need beside the two networks (vae.json).

Written by training and by the GPU check (benchmarks/gpu_check.py), which trains without MLflow, so
this module imports neither MLflow nor TensorFlow.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from omegaconf import DictConfig

from pipeline.dataset import to_float
from pipeline.model import VAE
from pipeline.networks import architecture


def model_card(
    cfg: DictConfig,
    vae: VAE,
    train_images: np.ndarray,
    z_mean: np.ndarray,
    z_log_var: np.ndarray,
    run_id: str,
    epochs: int,
) -> dict[str, Any]:
    """The card of a trained VAE: its config's name and architecture, latent size, β, the
    likelihood and its σ, the image size, the run and how many epochs trained it."""
    return {
        "run_id": run_id,
        "model": cfg.model.name,
        "arch": architecture(cfg.model),
        "latent_dim": cfg.model.latent_dim,
        "beta": float(cfg.model.beta),
        "likelihood": cfg.model.likelihood,
        "sigma": cfg.model.sigma if cfg.model.likelihood == "gaussian" else None,
        "image_size": int(train_images.shape[1]),
        "log_sigma": final_log_sigma(vae, train_images, z_mean, z_log_var, cfg),
        "epochs": epochs,
    }


def final_log_sigma(
    vae: VAE,
    images: np.ndarray,
    z_mean: np.ndarray,
    z_log_var: np.ndarray,
    cfg: DictConfig,
) -> float | None:
    """log σ of a Gaussian decoder as the saved model's likelihood: the learned one (floored), or
    for model.sigma=optimal the maximum-likelihood σ over the training faces, with z sampled as in
    training (σ² = their mean squared error, floored)."""
    if vae.likelihood != "gaussian":
        return None
    if not vae.optimal_sigma:
        return float(np.asarray(vae.effective_log_sigma()))
    rng = np.random.default_rng(cfg.train.seed)
    z = z_mean + np.exp(0.5 * np.clip(z_log_var, -20, 20)) * rng.standard_normal(z_mean.shape)
    x_hat = vae.decoder.predict(z.astype(np.float32), batch_size=256, verbose=0)
    mse = float(np.mean((to_float(images) - x_hat) ** 2))
    floor = float(cfg.model.get("sigma_floor", 0.0))
    return 0.5 * math.log(max(mse, floor**2, 1e-12))
