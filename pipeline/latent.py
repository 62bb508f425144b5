"""What works on latent codes: sampling faces, attribute directions, interpolations and edits."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from pipeline.errors import PipelineError
from pipeline.sampler import GaussianMixture, latents


def predict(model: keras.Model, x: np.ndarray, batch_size: int) -> Any:
    return model.predict(x, batch_size=batch_size, verbose=0)


def sample_faces(
    decoder: keras.Model,
    n: int,
    latent_dim: int,
    temperature: float,
    seed: int,
    batch_size: int = 256,
    mixture: GaussianMixture | None = None,
) -> np.ndarray:
    """n faces decoded from the ex-post mixture's codes, or from N(0, t²I) without one."""
    z = latents(mixture, n, latent_dim, temperature, seed)
    return np.asarray(predict(decoder, z, batch_size))


def attribute_direction(z: np.ndarray, scores: np.ndarray, quantile: float = 0.2) -> np.ndarray:
    """Mean latent of the faces scoring in the top `quantile` minus that of the bottom `quantile`."""
    lo, hi = np.quantile(scores, [quantile, 1 - quantile])
    high, low = z[scores >= hi], z[scores <= lo]
    if len(high) == 0 or len(low) == 0:
        raise PipelineError("an attribute needs faces at both ends of its score range")
    return high.mean(0) - low.mean(0)


def resolve_attributes(names: list[str], available: list[str]) -> list[str]:
    unknown = [n for n in names if n not in available]
    if unknown:
        valid = (
            ", ".join(available)
            or "(none: the prepared file has no attributes; set data.attributes=true)"
        )
        raise PipelineError(f"unknown attribute(s) {unknown}; valid names: {valid}")
    return list(names)


def distinct_people(person: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to k faces of k different people, spread over the (sorted) split: LFW has
    runs of one person's photos, so the first k faces are often the same face k times."""
    _, first = np.unique(np.asarray(person), return_index=True)
    first = np.sort(first)
    picks = np.linspace(0, len(first) - 1, num=min(k, len(first))).round().astype(int)
    return first[np.unique(picks)]


def interpolation_grid(
    decoder: keras.Model, z_a: np.ndarray, z_b: np.ndarray, steps: int
) -> np.ndarray:
    t = np.linspace(0, 1, steps)[None, :, None]
    z = (z_a[:, None] * (1 - t) + z_b[:, None] * t).reshape(-1, z_a.shape[-1])
    return np.asarray(predict(decoder, z.astype(np.float32), 256))


def edit_grid(
    decoder: keras.Model, z: np.ndarray, direction: np.ndarray, strengths: list[float]
) -> np.ndarray:
    edits = z[:, None] + np.asarray(strengths)[None, :, None] * direction[None, None]
    return np.asarray(predict(decoder, edits.reshape(-1, z.shape[-1]).astype(np.float32), 256))
