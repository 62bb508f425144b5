"""generate: new faces from any saved decoder, without the training code.

    python -m pipeline.generate                                         # models/decoder.keras, 64 faces
    python -m pipeline.generate generate.model=<run_id> generate.n=16 generate.temperature=0.7
    python -m pipeline.generate generate.model=runs:/<run_id>/generator # the run's logged generator
    python -m pipeline.generate generate.model=models:/lfw-vae@champion    # a registered generator
    python -m pipeline.generate generate.mode=interpolate generate.n=8
    python -m pipeline.generate generate.mode=attribute generate.attribute=Smiling   # needs the encoder too

Writes a grid (grid.png) and, with generate.singles=true, one PNG per face, to generate.out.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline import generator, sampler
from pipeline.artifacts import load_network, mixture_for
from pipeline.dataset import load_faces, to_float
from pipeline.errors import PipelineError, exit_on_pipeline_error
from pipeline.images import save_grid, save_png
from pipeline.latent import (
    attribute_direction,
    distinct_people,
    edit_grid,
    interpolation_grid,
    resolve_attributes,
    sample_faces,
)
from pipeline.sampler import GaussianMixture

log = logging.getLogger(__name__)
MODES = ("sample", "interpolate", "attribute")


def generate(
    cfg: DictConfig,
    decoder: keras.Model,
    encoder: keras.Model | None = None,
    faces_path: Path | None = None,
    mixture: GaussianMixture | None = None,
) -> np.ndarray:
    """Faces in the configured mode; codes come from `mixture` (the ex-post sampler) if given,
    else from the prior."""
    g = cfg.generate
    sampler.validate(g.sampler)
    if not isinstance(g.n, int) or g.n <= 0:
        raise PipelineError(f"generate.n={g.n!r} must be a positive integer")
    if g.mode not in MODES:
        raise PipelineError(
            f"generate.mode={g.mode!r} is unknown: choose one of {', '.join(MODES)}"
        )
    if not g.temperature > 0:
        raise PipelineError(f"generate.temperature={g.temperature!r} must be > 0")
    latent = int(decoder.inputs[0].shape[-1])
    if g.mode == "sample":
        return sample_faces(decoder, g.n, latent, g.temperature, g.seed, mixture=mixture)
    if g.mode == "interpolate":
        ends = sampler.latents(mixture, 2 * g.n, latent, g.temperature, g.seed)
        return interpolation_grid(decoder, ends[: g.n], ends[g.n :], g.steps)
    if encoder is None or faces_path is None:
        raise PipelineError("generate.mode=attribute needs the encoder and the prepared data")
    faces = load_faces(faces_path)
    (name,) = resolve_attributes([g.attribute], faces.attribute_names)
    z_train, _ = encoder.predict(to_float(faces.subset("train").images), batch_size=256, verbose=0)
    direction = attribute_direction(
        z_train, faces.subset("train").attributes[:, faces.attribute_names.index(name)]
    )
    test = faces.subset("test")
    z, _ = encoder.predict(to_float(test.images[distinct_people(test.person, g.n)]), verbose=0)
    return edit_grid(decoder, z, direction, list(g.strengths))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_pipeline_error
def main(cfg: DictConfig) -> None:
    log.info("generate config:\n%s", OmegaConf.to_yaml(cfg.generate))
    path = hydra.utils.to_absolute_path
    ref = cfg.generate.model or path(str(Path(cfg.paths.models) / "decoder.keras"))
    logged = generator.load(ref, cfg.tracking)
    decoder = logged.decoder if logged else load_network(ref, cfg.tracking)
    mixture = None
    if cfg.generate.sampler == "gmm":
        mixture = logged.mixture if logged else mixture_for(ref, cfg.tracking)
        if mixture is None:  # never a silent fallback: the prior's faces are not the model's
            raise PipelineError(
                f"no ex-post sampler found for {ref} (sampler.npz beside a .keras file, or the "
                "run's sampler/ artifact; a registered models:/ decoder carries none): give its "
                "run id or folder, or ask for the prior explicitly (generate.sampler=prior)"
            )
    encoder = None
    if cfg.generate.mode == "attribute":
        if logged is not None and logged.encoder is not None and not cfg.generate.encoder:
            encoder = logged.encoder
        else:
            encoder_ref = cfg.generate.encoder or (
                ref.replace("decoder", "encoder") if "decoder" in ref else ref
            )
            encoder = load_network(encoder_ref, cfg.tracking, part="encoder")
    faces = generate(cfg, decoder, encoder, Path(path(cfg.paths.prepared)) / "faces.npz", mixture)
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
