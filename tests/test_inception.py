from __future__ import annotations

import numpy as np
import pytest

from pipeline import metrics

pytestmark = pytest.mark.skipif(
    metrics.fid_unavailable_reason() is not None, reason="the [fid] extra is not installed"
)


def test_the_rebuilt_network_gives_the_torchscripts_features() -> None:
    """Folding the batch norms and dropping the layout changes moves no feature beyond float32
    round-off, and no FID beyond what the fourth decimal shows."""
    import torch
    from skimage.data import lfw_subset

    faces = (np.repeat(lfw_subset()[:32, ..., None], 3, axis=-1) * 255).astype(np.uint8)
    ours = metrics.inception_features(faces, batch_size=16)
    scripted = torch.jit.load(str(metrics.fid_network_path()), map_location="cpu").eval()
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 128.0 - 1.0
    x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        theirs = scripted(x).numpy().astype(np.float64)
    assert ours.shape == theirs.shape == (32, 2048)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
    noise = np.random.default_rng(0).integers(0, 255, faces.shape, dtype=np.uint8)
    fake = metrics.inception_features(noise)
    assert metrics.fid_from_features(fake, ours) == pytest.approx(
        metrics.fid_from_features(fake, theirs), abs=1e-3
    )


def test_a_network_of_another_shape_is_refused() -> None:
    import torch

    from pipeline.inception import convert

    class Other(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    with pytest.raises(ValueError, match="unexpected module Other"):
        convert(torch.jit.script(Other()))
