"""Would bfloat16 make the FID network fast enough, and what would it do to FID?

    python benchmarks/inception_precision.py --models models    # a trained model's folder

Computes the Inception features of the test and validation faces and of the model's samples
(the default sampler, evaluate's seed) in float32 (as `pipeline.metrics` does; real faces from the
cache) and under CPU bfloat16 autocast, and prints img/s and the FIDs both ways. A figure only:
evaluation stays float32, the standard network's numerics.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def bf16_features(images: np.ndarray, batch_size: int = 50) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    from pipeline import metrics

    net, out = metrics._inception(), []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size]))
            x = x.permute(0, 3, 1, 2).float() / 128.0 - 1.0
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(net(x.contiguous(memory_format=torch.channels_last)).float().numpy())
    return np.concatenate(out).reshape(len(images), -1).astype(np.float64)


def main() -> None:
    from pipeline import metrics
    from pipeline.artifacts import load_local
    from pipeline.dataset import load_faces
    from pipeline.images import to_uint8
    from pipeline.latent import sample_faces

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models")
    parser.add_argument("--data", default="data/prepared/faces.npz")
    parser.add_argument("--cache", default=".cache/fid")
    args = parser.parse_args()
    faces = load_faces(Path(args.data))
    real = {s: faces.subset(s).images for s in ("test", "val")}
    vae = load_local(Path(args.models))
    n, latent = len(real["test"]), int(vae.card["latent_dim"])
    fake = to_uint8(sample_faces(vae.decoder, n, latent, 1.0, 0, mixture=vae.mixture))
    f32 = {s: metrics.cached_inception_features(v, Path(args.cache)) for s, v in real.items()}
    started = time.perf_counter()
    f32["fake"] = metrics.inception_features(fake)
    f32_rate = n / (time.perf_counter() - started)
    started = time.perf_counter()
    b16 = {s: bf16_features(v) for s, v in {**real, "fake": fake}.items()}
    b16_rate = 3 * n / (time.perf_counter() - started)
    print(f"img/s: float32 {f32_rate:.1f}, bfloat16 autocast {b16_rate:.1f}")
    for a, b in (("val", "test"), ("fake", "test"), ("fake", "val")):
        print(
            f"FID {a} vs {b}: float32 {metrics.fid_from_features(f32[a], f32[b]):.3f}, "
            f"bfloat16 {metrics.fid_from_features(b16[a], b16[b]):.3f}"
        )


if __name__ == "__main__":
    main()
