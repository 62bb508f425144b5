"""generate: new faces from any saved decoder, without the training code.

    python -m pipeline.generate                                         # models/decoder.keras, 64 faces
    python -m pipeline.generate generate.model=runs:/<run_id>/decoder generate.n=16 generate.temperature=0.7
    python -m pipeline.generate generate.model=<run_id>                 # a bare MLflow run id works too
    python -m pipeline.generate generate.model=models:/lfw-vae-decoder/1
    python -m pipeline.generate generate.mode=interpolate generate.n=8
    python -m pipeline.generate generate.mode=attribute generate.attribute=Smiling   # needs the encoder too

Writes a grid (grid.png) and, with generate.singles=true, one PNG per face, to generate.out.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import hydra
import keras
import mlflow
import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline import tracking
from pipeline.dataset import load_faces, to_float
from pipeline.errors import PipelineError, exit_on_pipeline_error
from pipeline.evaluate import (
    attribute_direction,
    edit_grid,
    interpolation_grid,
    load_keras_model,
    resolve_attributes,
)
from pipeline.images import save_grid, save_png

log = logging.getLogger(__name__)
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MODES = ("sample", "interpolate", "attribute")


def load_decoder(ref: str, tracking_cfg: DictConfig, part: str = "decoder") -> keras.Model:
    """A decoder (or encoder) from a .keras file, an MLflow run id, runs:/ or models:/ URI."""
    if RUN_ID.match(ref):
        ref = f"runs:/{ref}/{part}"
    if ref.startswith(("runs:/", "models:/")):
        tracking.setup(tracking_cfg)
        if ref.startswith("runs:/"):
            run_id = ref.removeprefix("runs:/").split("/")[0]
            try:
                mlflow.get_run(run_id)
            except Exception as err:
                raise PipelineError(
                    f"MLflow run {run_id!r} does not exist in {tracking_cfg.tracking_uri}"
                ) from err
        try:
            model = mlflow.keras.load_model(ref)
        except Exception as err:
            raise PipelineError(
                f"could not load {ref} from {tracking_cfg.tracking_uri}: {err}"
            ) from err
    else:
        model = load_keras_model(ref, part)
    check_kind(model, ref, part)
    return model


def check_kind(model: keras.Model, ref: str, part: str) -> None:
    """A decoder maps (latent,) → (H, W, 3); an encoder maps (H, W, 3) → [μ, log σ²]."""
    inputs = model.inputs[0].shape
    outputs = model.outputs
    is_decoder = len(inputs) == 2 and len(outputs) == 1 and len(outputs[0].shape) == 4
    is_encoder = len(inputs) == 4 and len(outputs) == 2
    if (part == "decoder" and not is_decoder) or (part == "encoder" and not is_encoder):
        shape = ", ".join(str(tuple(o.shape)) for o in outputs)
        raise PipelineError(f"{ref} is not a VAE {part}: it maps {tuple(inputs)} to {shape}")


def generate(
    cfg: DictConfig,
    decoder: keras.Model,
    encoder: keras.Model | None = None,
    faces_path: Path | None = None,
) -> np.ndarray:
    g = cfg.generate
    if not isinstance(g.n, int) or g.n <= 0:
        raise PipelineError(f"generate.n={g.n!r} must be a positive integer")
    if g.mode not in MODES:
        raise PipelineError(
            f"generate.mode={g.mode!r} is unknown: choose one of {', '.join(MODES)}"
        )
    if not g.temperature > 0:
        raise PipelineError(f"generate.temperature={g.temperature!r} must be > 0")
    latent = int(decoder.inputs[0].shape[-1])
    rng = np.random.default_rng(g.seed)
    if g.mode == "sample":
        z = rng.standard_normal((g.n, latent)).astype(np.float32) * g.temperature
        return np.asarray(decoder.predict(z, verbose=0))
    if g.mode == "interpolate":
        ends = rng.standard_normal((2, g.n, latent)).astype(np.float32) * g.temperature
        return interpolation_grid(decoder, ends[0], ends[1], g.steps)
    if encoder is None or faces_path is None:
        raise PipelineError("generate.mode=attribute needs the encoder and the prepared data")
    faces = load_faces(faces_path)
    (name,) = resolve_attributes([g.attribute], faces.attribute_names)
    z_train, _ = encoder.predict(to_float(faces.subset("train").images), batch_size=256, verbose=0)
    direction = attribute_direction(
        z_train, faces.subset("train").attributes[:, faces.attribute_names.index(name)]
    )
    test = faces.subset("test").images[: g.n]
    z, _ = encoder.predict(to_float(test), verbose=0)
    return edit_grid(decoder, z, direction, list(g.strengths))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_pipeline_error
def main(cfg: DictConfig) -> None:
    log.info("generate config:\n%s", OmegaConf.to_yaml(cfg.generate))
    path = hydra.utils.to_absolute_path
    ref = cfg.generate.model or path(str(Path(cfg.paths.models) / "decoder.keras"))
    decoder = load_decoder(ref, cfg.tracking)
    encoder = None
    if cfg.generate.mode == "attribute":
        encoder_ref = cfg.generate.encoder or (
            ref.replace("decoder", "encoder") if "decoder" in ref else ref
        )
        encoder = load_decoder(encoder_ref, cfg.tracking, part="encoder")
    faces = generate(cfg, decoder, encoder, Path(path(cfg.paths.prepared)) / "faces.npz")
    out = Path(path(cfg.generate.out))
    rows = {"sample": None, "interpolate": cfg.generate.n, "attribute": cfg.generate.n}[
        cfg.generate.mode
    ]
    save_grid(faces, out / "grid.png", rows=rows, scale=3)
    if cfg.generate.singles:
        for i, face in enumerate(faces):
            save_png(face, out / f"face_{i:04d}.png", scale=2)
    log.info("wrote %d faces to %s", len(faces), out / "grid.png")


if __name__ == "__main__":
    main()
