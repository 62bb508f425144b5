"""A trained VAE as files and MLflow artifacts: its float32 encoder and decoder and its card
(vae.json: likelihood, learned σ, latent size, run id). Saved atomically; loaded with Keras safe
mode, so a model file carrying code (a Lambda layer) is refused instead of run."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import keras
import mlflow
from omegaconf import DictConfig

from pipeline import sampler, tracking
from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.errors import PipelineError
from pipeline.networks import build_model
from pipeline.sampler import GaussianMixture

T = TypeVar("T")


def save_keras(model: keras.Model, path: Path) -> None:
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def save_vae(
    model_cfg: DictConfig,
    encoder: keras.Model,
    decoder: keras.Model,
    card: dict,
    models_dir: Path,
) -> tuple[keras.Model, keras.Model]:
    """encoder.keras, decoder.keras (float32, whatever precision trained them) and vae.json in
    models_dir, each written atomically. Returns the float32 networks that were saved."""
    encoder, decoder = float32_networks(model_cfg, encoder, decoder, int(card["image_size"]))
    save_keras(encoder, models_dir / "encoder.keras")
    save_keras(decoder, models_dir / "decoder.keras")
    write_text_atomic(models_dir / "vae.json", json.dumps(card, indent=2) + "\n")
    return encoder, decoder


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


@dataclass
class TrainedVAE:
    encoder: keras.Model
    decoder: keras.Model
    card: dict  # vae.json: run_id, likelihood, log_sigma, latent_dim, ...
    mixture: GaussianMixture | None = None  # the ex-post latent sampler, if one was fitted


def load_keras_model(path: str | Path, what: str) -> keras.Model:
    """Load a .keras file with Keras's safe mode on: no arbitrary code (Lambda layers) runs."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(
            f"{what} {path} does not exist: train first (dvc repro train) or give another path"
        )
    if path.is_file() and path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise PipelineError(
            f"{path} is not a Keras model file: a .keras file is a zip archive and this one is "
            f"not ({path.stat().st_size} bytes; truncated or overwritten?): retrain, or copy it again"
        )
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except ValueError as err:
        if "safe_mode" in str(err) or "lambda" in str(err).lower():
            raise PipelineError(
                f"{path} contains code (a Lambda layer) and was refused: Keras safe mode never "
                "runs code from a model file; only load such a file if you trust it"
            ) from err
        raise PipelineError(f"{path} is not a Keras model file ({err})") from err
    except (OSError, KeyError) as err:  # zip errors, missing config.json, ...
        raise PipelineError(
            f"{path} is not a Keras model file ({type(err).__name__}: {err})"
        ) from err


def load_local(models_dir: Path) -> TrainedVAE:
    card_path = models_dir / "vae.json"
    if not card_path.exists():
        raise PipelineError(f"{card_path} is missing: train first (dvc repro train)")
    card = read_card(card_path.read_text(), str(card_path))
    return TrainedVAE(
        load_keras_model(models_dir / "encoder.keras", "encoder"),
        load_keras_model(models_dir / "decoder.keras", "decoder"),
        card,
        local_mixture(models_dir),
    )


def local_mixture(models_dir: Path) -> GaussianMixture | None:
    path = models_dir / sampler.FILE
    return sampler.load(path) if path.exists() else None


def run_mixture(run_id: str) -> GaussianMixture | None:
    """The run's ex-post sampler, or None for a run trained before samplers existed."""
    try:
        path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/sampler/{sampler.FILE}")
    except Exception:
        return None
    return sampler.load(path)


def log_mixture(mixture: GaussianMixture, models_dir: Path) -> None:
    """Save the sampler beside the networks and into the active MLflow run."""
    path = mixture.save(models_dir / sampler.FILE)
    tracking.with_retries(lambda: mlflow.log_artifact(str(path), "sampler"), "sampler")


CARD_KEYS = ("run_id", "latent_dim", "likelihood")


def read_card(text: str, where: str) -> dict:
    """vae.json's contents, or one PipelineError naming the file."""
    try:
        card = json.loads(text)
    except ValueError as err:
        raise PipelineError(f"{where} is not valid JSON ({err}): retrain to rewrite it") from None
    missing = [k for k in CARD_KEYS if not isinstance(card, dict) or k not in card]
    if missing:
        raise PipelineError(f"{where} lacks {missing}: it is not a model card; retrain")
    return card


def require_run(run_id: str, tracking_cfg: DictConfig, what: str) -> None:
    """Fail with one line unless the MLflow run exists in the configured store."""
    tracking.setup(tracking_cfg)
    try:
        mlflow.get_run(run_id)
    except Exception as err:
        raise PipelineError(
            f"MLflow run {run_id!r} does not exist in {tracking_cfg.tracking_uri} ({what}): "
            "copy a run id from `mlflow ui` or `python -m pipeline.compare`, or point "
            "tracking.tracking_uri at the store that trained it"
        ) from err


def load_run(run_id: str, tracking_cfg: DictConfig) -> TrainedVAE:
    """The VAE a training run logged: its generator (both networks, sampler, card), or for runs
    from before the generator, its Keras encoder and decoder models."""
    from pipeline import generator

    require_run(run_id, tracking_cfg, "evaluate.run_id")
    logged = generator.load(run_id, tracking_cfg, "evaluate.run_id")
    if logged is not None and logged.encoder is not None:
        return TrainedVAE(logged.encoder, logged.decoder, logged.card, logged.mixture)
    try:
        card = read_card(
            mlflow.artifacts.load_text(f"runs:/{run_id}/vae.json"), f"run {run_id}'s vae.json"
        )
        encoder = mlflow.keras.load_model(f"runs:/{run_id}/encoder")
        decoder = mlflow.keras.load_model(f"runs:/{run_id}/decoder")
    except PipelineError:
        raise
    except Exception as err:
        raise PipelineError(
            f"MLflow run {run_id} holds no trained VAE (vae.json, encoder, decoder): "
            f"{type(err).__name__}: {str(err).splitlines()[0][:200]}; was it a finished training run?"
        ) from err
    return TrainedVAE(encoder, decoder, card, run_mixture(run_id))


RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def from_mlflow(load: Callable[[str], T], ref: str, tracking_cfg: DictConfig) -> T:
    """`load(ref)` (an MLflow flavour's loader); any failure is one PipelineError naming both."""
    try:
        return load(ref)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PipelineError(
            f"could not load {ref} from {tracking_cfg.tracking_uri}: {first}"
        ) from err


def load_network(ref: str, tracking_cfg: DictConfig, part: str = "decoder") -> keras.Model:
    """The decoder or encoder from a .keras file, an MLflow run id, runs:/ or models:/ URI: out of
    the run's logged generator, or the Keras model of a run from before it."""
    from pipeline import generator

    logged = generator.load(ref, tracking_cfg)
    if logged is not None:
        network = getattr(logged, part)
        if network is None:
            raise PipelineError(
                f"{ref} was logged without its {part} (an older generator): give the "
                f"{part}.keras file of the run that trained it"
            )
        return network
    if RUN_ID.match(ref):
        ref = f"runs:/{ref}/{part}"
    if ref.startswith(("runs:/", "models:/")):
        tracking.setup(tracking_cfg)
        if ref.startswith("runs:/"):
            require_run(ref.removeprefix("runs:/").split("/")[0], tracking_cfg, "generate.model")
        model = from_mlflow(mlflow.keras.load_model, ref, tracking_cfg)
    else:
        model = load_keras_model(ref, part)
    check_kind(model, ref, part)
    return model


def mixture_for(ref: str, tracking_cfg: DictConfig) -> GaussianMixture | None:
    """The ex-post sampler that goes with a decoder reference: sampler.npz beside a .keras file,
    or the run's `sampler/` artifact for a run id or runs:/ URI; None if there is none."""
    if RUN_ID.match(ref):
        ref = f"runs:/{ref}/decoder"
    if ref.startswith("runs:/"):
        tracking.setup(tracking_cfg)
        return run_mixture(ref.removeprefix("runs:/").split("/")[0])
    if ref.startswith("models:/"):
        return None
    return local_mixture(Path(ref).parent)


def check_kind(model: keras.Model, ref: str, part: str) -> None:
    """A decoder maps (latent,) → (H, W, 3); an encoder maps (H, W, 3) → [μ, log σ²]."""
    inputs = model.inputs[0].shape
    outputs = model.outputs
    is_decoder = len(inputs) == 2 and len(outputs) == 1 and len(outputs[0].shape) == 4
    is_encoder = len(inputs) == 4 and len(outputs) == 2
    if (part == "decoder" and not is_decoder) or (part == "encoder" and not is_encoder):
        shape = ", ".join(str(tuple(o.shape)) for o in outputs)
        raise PipelineError(f"{ref} is not a VAE {part}: it maps {tuple(inputs)} to {shape}")
