"""Held-out evaluation of a trained VAE: metrics on the test split and the pictures people look at.

The evaluate stage calls `evaluate` on the model of the last `train`, and training calls it at the
end of each sweep job (`evaluate.after_training`), so a sweep's runs compare on held-out quality.
Metric definitions are in the README; metrics.py holds the formulas.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import mlflow
import numpy as np
from omegaconf import DictConfig

from pipeline import generator, metrics, sampler, tracking
from pipeline.artifacts import TrainedVAE
from pipeline.atomic import atomic_dir, atomic_path, write_text_atomic
from pipeline.dataset import Faces, to_float
from pipeline.errors import PipelineError
from pipeline.images import save_grid, save_labelled_rows, to_uint8
from pipeline.latent import (
    attribute_direction,
    distinct_people,
    edit_grid,
    interpolation_grid,
    predict,
    sample_faces,
)
from pipeline.losses import LOG_2PI, kl_divergence, reconstruction_nll
from pipeline.sampler import GaussianMixture

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- model evaluation


class Laps:
    """Seconds per phase, logged as each one ends: where an evaluation's minutes go."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        log.info("%s: %.1f s", phase, now - self._last)
        self._last = now


def log_normal(z: np.ndarray, mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    return -0.5 * np.sum(LOG_2PI + log_var + (z - mean) ** 2 / np.exp(log_var), axis=-1)


def likelihood_terms(
    vae: TrainedVAE, images: np.ndarray, k: int, batch_size: int, seed: int
) -> dict:
    """Single-sample ELBO terms and a k-sample importance-weighted log-likelihood bound, per image.

    For the Gaussian likelihood the data are dequantised ((x + u)/256, u ~ U(0,1)), which makes the
    bound one on the discrete 8-bit data; the Bernoulli-style losses are not densities on such data.
    """
    rng = np.random.default_rng(seed)
    lik, log_sigma = vae.card["likelihood"], vae.card.get("log_sigma")
    x = (
        (images.astype(np.float32) + rng.random(images.shape, dtype=np.float32)) / 256.0
        if lik == "gaussian"
        else to_float(images)
    )
    z_mean, z_log_var = (np.asarray(a, np.float64) for a in predict(vae.encoder, x, batch_size))
    per_dim_kl = 0.5 * (np.exp(z_log_var) + z_mean**2 - 1.0 - z_log_var)
    sigma = None if log_sigma is None else np.float32(log_sigma)
    log_w = np.zeros((k, len(x)))
    for i in range(k):
        z = z_mean + np.exp(0.5 * z_log_var) * rng.standard_normal(z_mean.shape)
        codes = z.astype(np.float32)
        # batch by batch, each decoded batch scored and dropped: `predict` over all the faces
        # gathers every decoded face into one array first, and that copying was much of this
        # phase's time (the same batches, so the same numbers)
        nll = np.concatenate(
            [
                np.asarray(
                    reconstruction_nll(
                        x[s : s + batch_size],
                        vae.decoder.predict_on_batch(codes[s : s + batch_size]),
                        lik,
                        sigma,
                    ),
                    np.float64,
                )
                for s in range(0, len(x), batch_size)
            ]
        )
        if i == 0:
            reconstruction = nll
        log_w[i] = -nll + log_normal(z, 0.0, np.zeros_like(z)) - log_normal(z, z_mean, z_log_var)
    kl = np.asarray(kl_divergence(z_mean, z_log_var), np.float64)
    return {
        "reconstruction": reconstruction,
        "kl": kl,
        "neg_elbo": reconstruction + kl,
        "iw_log_likelihood": metrics.log_mean_exp(log_w, axis=0),
        "per_dim_kl": per_dim_kl.mean(0),
        "z_mean": z_mean,
    }


# --------------------------------------------------------------------------- pictures


def kl_plot(per_dim_kl: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(per_dim_kl)[::-1]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(np.arange(len(order)), per_dim_kl[order], width=1.0)
    ax.set(
        xlabel="latent dimension (sorted)",
        ylabel="KL (nats)",
        title="KL per latent dimension on test faces",
    )
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


FID_EXTRA = ("prior", "gmm", "reconstructions")  # sets measured beside the default sampler's


def validate_evaluate_config(e: DictConfig) -> None:
    """One clear error per bad evaluate.* value; training calls this before it starts, so a bad
    value never costs a training."""
    sampler.validate(e.sampler)
    n = e.n_samples
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise PipelineError(
            f"evaluate.n_samples={n!r} must be a positive integer (or null for the test-set size)"
        )
    for key in ("batch_size", "importance_samples", "kid_subsets", "kid_subset_size"):
        value = e[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise PipelineError(f"evaluate.{key}={value!r} must be a positive integer")
    extra = list(e.get("fid_extra") or [])
    unknown = [x for x in extra if x not in FID_EXTRA]
    if unknown:
        raise PipelineError(
            f"evaluate.fid_extra={extra}: {unknown} unknown; choose from {', '.join(FID_EXTRA)}"
        )
    sizes = list(e.get("fid_sizes") or [])
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in sizes):
        raise PipelineError(
            f"evaluate.fid_sizes={sizes}: each must be an integer >= 2 (or [] for none)"
        )
    bad = [t for t in e.temperatures if not isinstance(t, int | float) or not 0 < t < math.inf]
    if bad:
        raise PipelineError(f"evaluate.temperatures={list(e.temperatures)}: each must be > 0")


def evaluate_after_training(cfg: DictConfig, in_sweep: bool) -> bool:
    """`evaluate.after_training`: auto = in sweeps (DVC runs its own evaluate stage), or true/false."""
    when = cfg.evaluate.get("after_training", "auto")
    if when not in ("auto", True, False):
        raise PipelineError(
            f"evaluate.after_training={when!r} is invalid: it must be auto, true or false"
        )
    return in_sweep if when == "auto" else bool(when)


def evaluate(cfg: DictConfig, vae: TrainedVAE, faces: Faces, out_dir: Path) -> dict:
    """Compute every metric and picture; returns the metrics dict (also written to out_dir)."""
    e = cfg.evaluate
    validate_evaluate_config(e)
    samplers = available_samplers(e.sampler, vae)  # before any work
    extra = list(e.get("fid_extra") or [])
    if "gmm" in extra and "gmm" not in samplers:
        raise PipelineError(
            "evaluate.fid_extra asks for gmm, but the model has no ex-post sampler (sampler.npz): "
            "drop gmm from evaluate.fid_extra"
        )
    test, train = faces.subset("test"), faces.subset("train")
    if len(test.images) < 2:
        raise PipelineError(
            "the prepared file has fewer than 2 test faces: check data.prepare.split"
        )
    started = time.perf_counter()
    lap = Laps()
    terms = likelihood_terms(vae, test.images, e.importance_samples, e.batch_size, e.seed)
    lap(f"likelihood terms ({e.importance_samples} importance samples)")
    dims = int(np.prod(test.images.shape[1:]))
    x = to_float(test.images)
    z_mean, _ = predict(vae.encoder, x, e.batch_size)
    recon = np.asarray(predict(vae.decoder, z_mean, e.batch_size))
    result: dict[str, Any] = {
        "test_images": len(test.images),
        "mse": float(metrics.mse(x, recon).mean()),
        "psnr": float(metrics.psnr(x, recon).mean()),
        "ssim": float(metrics.ssim(x, recon).mean()),
        "reconstruction": float(terms["reconstruction"].mean()),
        "kl": float(terms["kl"].mean()),
        "neg_elbo_nats": float(terms["neg_elbo"].mean()),
        "iw_nll_nats": float(-terms["iw_log_likelihood"].mean()),
        "importance_samples": int(e.importance_samples),
        "active_units": metrics.active_units(terms["z_mean"], e.active_unit_threshold),
        "latent_dim": int(vae.card["latent_dim"]),
    }
    if vae.card["likelihood"] == "gaussian":
        result["neg_elbo_bits_per_dim"] = metrics.bits_per_dim(result["neg_elbo_nats"], dims)
        result["iw_nll_bits_per_dim"] = metrics.bits_per_dim(result["iw_nll_nats"], dims)
    lap("reconstructions, PSNR, SSIM")

    n = int(e.n_samples or len(test.images))
    default = e.sampler
    result["sampler"] = default
    latent = vae.card["latent_dim"]
    # the default sampler is always measured; other samplers and the reconstructions only on
    # request (evaluate.fid_extra): each set costs one pass of the Inception network
    measured = [default, *(s for s in samplers if s in extra and s != default)]
    samples = {
        name: sample_faces(vae.decoder, n, latent, 1.0, e.seed, mixture=samplers[name])
        for name in measured
    }
    lap("sampling")
    reason = metrics.fid_unavailable_reason() if e.fid else "disabled (evaluate.fid=false)"
    if reason is None:
        cache = None if e.cache_dir is None else Path(hydra.utils.to_absolute_path(e.cache_dir))
        # real faces' features are cached; each generated set is compared with the test faces
        # (reported) and with the validation faces (val_*: what model selection ranks by)
        refs = {
            "test": metrics.Reference(
                metrics.cached_inception_features(test.images, cache, "FID: test faces")
            )
        }
        val = faces.subset("val")
        if len(val.images) >= 2:
            refs["val"] = metrics.Reference(
                metrics.cached_inception_features(val.images, cache, "FID: val faces")
            )
        lap("real faces' Inception features (cached after the first time)")
        for name, faces_s in samples.items():
            fake = metrics.inception_features(to_uint8(faces_s), desc=f"FID: {name} samples")
            lap(f"Inception features: {name} samples")
            for split, real in refs.items():
                prefix = "" if split == "test" else "val_"
                result[f"{prefix}fid_{name}"] = real.fid(fake)
                result[f"{prefix}kid_{name}"], result[f"{prefix}kid_std_{name}"] = real.kid(
                    fake, e.kid_subsets, min(e.kid_subset_size, n, len(real))
                )
            sizes = sorted({n for n in e.get("fid_sizes") or [] if n < len(fake)})
            if name == default and sizes:  # FID's small-sample bias, extrapolated away
                result["fid_inf"], by_n = metrics.fid_infinity(
                    fake, refs["test"], [*sizes, len(fake)], e.seed
                )
                result |= {f"fid_n{k}": v for k, v in by_n.items()}
        # the default sampler's figures under the plain names; `sampler` says which one it was
        for prefix in ("", "val_") if "val" in refs else ("",):
            for stat in ("fid", "kid", "kid_std"):
                result[f"{prefix}{stat}"] = result[f"{prefix}{stat}_{default}"]
        if "reconstructions" in extra:
            # reconstructions vs test faces: how close the decoder comes to the faces it is given
            rec = metrics.inception_features(to_uint8(recon), desc="FID: reconstructions")
            result["fid_reconstructions"] = refs["test"].fid(rec)
        result["fid_samples"], result["fid_real"] = n, len(refs["test"])
        result["fid_network"], result["fid_resize"] = metrics.FID_NETWORK, metrics.FID_RESIZE
    else:
        log.warning("FID/KID skipped: %s", reason)
        result["fid_skipped"] = reason

    lap("FID, KID, FID∞")
    out_dir.mkdir(parents=True, exist_ok=True)
    mixture = samplers[default]
    for temperature in e.temperatures:
        faces_t = (
            samples[default][:64]
            if temperature == 1.0
            else sample_faces(vae.decoder, 64, latent, temperature, e.seed, mixture=mixture)
        )
        save_grid(faces_t, out_dir / f"samples_t{temperature:g}.png")
    save_grid(np.concatenate([x[:16], recon[:16]]), out_dir / "reconstructions.png", rows=2)
    pairs = min(4, len(x) // 2)
    save_grid(
        interpolation_grid(
            vae.decoder, z_mean[:pairs], z_mean[pairs : 2 * pairs], e.interpolation_steps
        ),
        out_dir / "interpolations.png",
        rows=pairs,
    )
    kl_plot(terms["per_dim_kl"], out_dir / "kl_per_dimension.png")
    wanted = [a for a in e.attributes if a in faces.attribute_names]
    if len(wanted) < len(e.attributes):
        log.warning(
            "no attribute edits for %s: not in the prepared file's attributes",
            [a for a in e.attributes if a not in wanted],
        )
    if wanted and len(train.images):
        z_train, _ = predict(vae.encoder, to_float(train.images), e.batch_size)
        people = distinct_people(test.person, 4)  # four different people, not one person 4 times
        blocks = []
        for name in wanted:
            direction = attribute_direction(
                z_train, train.attributes[:, faces.attribute_names.index(name)]
            )
            edits = edit_grid(vae.decoder, z_mean[people], direction, list(e.edit_strengths))
            blocks.append((name, edits))
        save_labelled_rows(
            blocks,
            out_dir / "attribute_edits.png",
            rows_per_block=len(people),
            header=[f"{s:+g}" for s in e.edit_strengths],  # strength along the direction
        )
        result["attribute_edits"] = ", ".join(wanted)
    lap("pictures and attribute edits")
    result["seconds"] = time.perf_counter() - started
    write_text_atomic(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    return result


def available_samplers(wanted: str, vae: TrainedVAE) -> dict[str, GaussianMixture | None]:
    """Every sampler the model has, by name; the one asked for must be among them. A model
    without its ex-post mixture is an error when the mixture was asked for, never a silent
    fallback to the prior (for a σ-VAE the prior's faces are far worse)."""
    sampler.validate(wanted)
    if wanted == "gmm" and vae.mixture is None:
        raise PipelineError(
            f"run {vae.card.get('run_id')} has no ex-post sampler (sampler.npz) beside its "
            "networks: retrain it, or ask for the prior explicitly (evaluate.sampler=prior)"
        )
    return {"prior": None, **({"gmm": vae.mixture} if vae.mixture is not None else {})}


def metric_name(key: str) -> str:
    """MLflow name of an evaluation figure: test-split figures get `test_`, val_* keep theirs."""
    return key if key.startswith("val_") else f"test_{key}"


def log_to_mlflow(
    run_id: str, result: dict, out_dir: Path, dataset: mlflow.data.dataset.Dataset | None = None
) -> None:
    """The figures into the run (and its logged generator), with `dataset` (the evaluated faces)
    linked to them when given, and the pictures as the run's `evaluation/` artifacts."""
    numbers = {
        metric_name(k): float(v)
        for k, v in result.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    # written into the run without reopening it: its status, end time and duration stay those
    # of the training; the figures are also linked to the run's logged generator (MLflow 3)
    client = mlflow.MlflowClient()
    model_id = generator.logged_model_id(run_id)
    tracking.with_retries(
        lambda: mlflow.log_metrics(numbers, run_id=run_id, model_id=model_id, dataset=dataset),
        "test metrics",
    )
    # which sampler `test_fid` / `val_fid` come from, beside the per-sampler figures
    client.set_tag(run_id, "eval.sampler", result["sampler"])
    for key in ("fid_network", "fid_resize", "fid_skipped", "attribute_edits"):
        if key in result:
            client.set_tag(run_id, f"eval.{key}", str(result[key])[:5000])
    tracking.with_retries(
        lambda: client.log_artifacts(run_id, str(out_dir), "evaluation"), "evaluation pictures"
    )


def evaluate_into_run(
    cfg: DictConfig, vae: TrainedVAE, faces: Faces, keep: Path | None = None
) -> dict:
    """`evaluate`, then the numbers (as test_* metrics) and pictures into the model's MLflow run;
    the pictures also to `keep` when given, replacing it only once everything has succeeded."""
    with tempfile.TemporaryDirectory(prefix="evaluation-") as tmp:
        result = evaluate(cfg, vae, faces, Path(tmp))
        test = faces.subset("test").images
        digest = hashlib.sha256(np.ascontiguousarray(test).tobytes()).hexdigest()[:16]
        dataset = mlflow.data.from_numpy(test, name="faces.npz (test split)", digest=digest)
        log_to_mlflow(vae.card["run_id"], result, Path(tmp), dataset)
        if cfg.tracking.register_model:  # the best validation FID holds models:/<name>@champion
            generator.promote(
                cfg.tracking.register_model, vae.card["run_id"], result.get("val_fid")
            )
        if keep is not None:
            with atomic_dir(keep) as staging:
                shutil.copytree(tmp, staging, dirs_exist_ok=True)
    return result
