"""Where new faces' latent codes come from: the prior N(0, I), or an ex-post density fitted to where
the encoder actually puts faces (the means μ(x) of the training faces).

A VAE's aggregate posterior leaves "holes" in N(0, I): codes the decoder never learned to decode.
Sampling from a Gaussian mixture fitted to the encodings avoids them (Ghosh et al., ICLR 2020).
The number of components is chosen by the validation faces' log-likelihood. The fitted mixture is
stored as plain arrays (`sampler.npz`, loaded with allow_pickle=False), never as a pickle.
Temperature t scales every sampler's spread: N(0, t²I) for the prior, t·(z - mean) within a
mixture component.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)
SAMPLERS = ("prior", "gmm")
FILE = "sampler.npz"


@dataclass
class GaussianMixture:
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    chol: np.ndarray  # (K, d, d): lower Cholesky factors of the covariances

    @property
    def latent_dim(self) -> int:
        return int(self.means.shape[1])

    def sample(self, n: int, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        eps = rng.standard_normal((n, self.latent_dim))
        z = self.means[k] + temperature * np.einsum("nij,nj->ni", self.chol[k], eps)
        return z.astype(np.float32)

    def log_density(self, z: np.ndarray) -> np.ndarray:
        """log p(z) per row."""
        z = np.asarray(z, np.float64)
        per_component = []
        for w, mean, chol in zip(self.weights, self.means, self.chol, strict=True):
            u = np.linalg.solve(chol, (z - mean).T)  # L⁻¹(z - μ)
            log_det = 2.0 * np.log(np.diag(chol)).sum()
            per_component.append(
                np.log(w) - 0.5 * (np.sum(u * u, axis=0) + log_det + z.shape[1] * np.log(2 * np.pi))
            )
        stacked = np.stack(per_component)
        top = stacked.max(axis=0)
        return top + np.log(np.exp(stacked - top).sum(axis=0))

    def save(self, path: str | os.PathLike[str]) -> Path:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(
                tmp, kind=np.asarray("gmm"), weights=self.weights, means=self.means, chol=self.chol
            )
        return Path(path)


def load(path: str | os.PathLike[str]) -> GaussianMixture:
    """A saved mixture; anything else (a pickle, other arrays, bad shapes) is one clear error."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            kind = str(npz["kind"])
            weights, means, chol = npz["weights"], npz["means"], npz["chol"]
    except (OSError, ValueError, KeyError) as err:
        raise PipelineError(
            f"{path} is not a saved latent sampler ({type(err).__name__}: {err}); pickles are "
            "never loaded: refit it by retraining"
        ) from None
    k, d = means.shape if means.ndim == 2 else (0, 0)
    if kind != "gmm" or weights.shape != (k,) or chol.shape != (k, d, d) or k == 0:
        raise PipelineError(f"{path} holds arrays of the wrong kind or shape: not a latent sampler")
    return GaussianMixture(
        weights.astype(np.float64), means.astype(np.float64), chol.astype(np.float64)
    )


def validate(sampler: str, components: list[int] | None = None) -> None:
    """One clear error for a bad sampler name or component count, before anything is fitted."""
    if sampler not in SAMPLERS:
        raise PipelineError(f"sampler={sampler!r} is unknown: choose one of {', '.join(SAMPLERS)}")
    if components is not None and (
        not components
        or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in components)
    ):
        raise PipelineError(
            f"sampler.components={list(components)} must be a list of positive integers"
        )


def fit_gmm(
    z_train: np.ndarray, z_val: np.ndarray, components: list[int], seed: int = 0
) -> tuple[GaussianMixture, dict[int, float]]:
    """Fit a full-covariance mixture for each component count; keep the one whose validation
    log-likelihood per code is highest. Returns it and every candidate's score."""
    from sklearn.mixture import GaussianMixture as SkMixture

    validate("gmm", components)
    scores: dict[int, float] = {}
    best: GaussianMixture | None = None
    for k in sorted(set(components)):
        if k > len(z_train):
            log.warning("sampler: %d components > %d training codes: skipped", k, len(z_train))
            continue
        sk = SkMixture(k, covariance_type="full", reg_covar=1e-5, random_state=seed, max_iter=200)
        sk.fit(np.asarray(z_train, np.float64))
        scores[k] = float(sk.score(np.asarray(z_val, np.float64)))
        log.info("sampler: %d-component mixture, validation log-likelihood %.2f", k, scores[k])
        if scores[k] >= max(scores.values()):
            best = GaussianMixture(sk.weights_, sk.means_, np.linalg.cholesky(sk.covariances_))
    if best is None:
        raise PipelineError(f"sampler.components={components}: none fits {len(z_train)} codes")
    return best, scores


def latents(
    mixture: GaussianMixture | None, n: int, latent_dim: int, temperature: float, seed: int
) -> np.ndarray:
    """n codes from the mixture, or from N(0, t²I) when there is none."""
    if mixture is not None:
        return mixture.sample(n, temperature, seed)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, latent_dim)).astype(np.float32) * temperature
