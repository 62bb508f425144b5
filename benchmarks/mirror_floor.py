"""Is LFW left-right symmetric as FID sees it? Real faces only, no model.

    python benchmarks/mirror_floor.py

`train.hflip=true` trains on a set in which half of each epoch's faces are mirrored, so a model
that learns it perfectly draws faces from that half-mirrored distribution. This measures what
that alone costs at the project's protocol: FID/KID against the 1,315 validation faces of

- the test faces as they are (the floor: other people, same distribution);
- the test faces, a random half of them mirrored (what a perfect mirrored-data model would draw);
- the test faces, all mirrored.

If the data were symmetric the three rows would be level. Only the mirrored test faces need an
Inception pass (minutes on a CPU); the real faces' features come from evaluate's cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, default=ROOT / "data" / "prepared" / "faces.npz")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "fid")
    parser.add_argument(
        "--seed", type=int, default=0, help="which half of the test faces is mirrored"
    )
    args = parser.parse_args()

    from pipeline import metrics
    from pipeline.dataset import load_faces

    faces = load_faces(args.faces)
    val, test = faces.subset("val"), faces.subset("test")
    ref = metrics.Reference(metrics.cached_inception_features(val.images, args.cache, "val"))
    plain = metrics.cached_inception_features(test.images, args.cache, "test")
    mirrored = metrics.inception_features(test.images[:, :, ::-1], desc="mirrored test faces")
    half = np.random.default_rng(args.seed).random(len(plain)) < 0.5
    rows = {
        "test faces": plain,
        "test faces, a random half mirrored": np.where(half[:, None], mirrored, plain),
        "test faces, all mirrored": mirrored,
    }
    print(f"\nagainst the {len(ref)} validation faces, n = {len(plain)}")
    print("| real faces | val FID | val KID |\n| --- | --- | --- |")
    for name, feats in rows.items():
        kid, _ = ref.kid(feats)
        print(f"| {name} | {ref.fid(feats):.1f} | {kid:.4f} |")


if __name__ == "__main__":
    main()
