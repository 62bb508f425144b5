"""Does the trained patch critic pick better samples? Rejection by the critic, ranked on validation FID.

    python benchmarks/critic_rejection.py models/critic100-from20-s42 \
        model.adversarial_weight=100 train.adversarial_start_epoch=20 --keep 1,0.75,0.5,0.25

A run with a critic (model.adversarial_weight > 0) ends with a network that tells real faces from
decoded ones. Discriminator rejection sampling (Azadi et al., ICLR 2019) spends it at sampling time:
draw more codes than needed from the model's mixture, decode them, keep the faces the critic finds
most real. For each kept fraction f this draws n/f codes (sampling seed 0, t = 1; n = the number of
validation faces), keeps the n with the highest mean patch logit, and scores FID/KID against the
1,315 validation faces (the test faces are not used); f = 1 keeps the first n, the mixture as it is.
Beside each row: the kept faces' mean logit and the median distance of 500 of their codes to the
nearest training code in standardised units (a selection that favoured near-copies of training
faces would shrink it). The critic lives only in the training checkpoint (with the optimizer), so the
run's overrides are needed to rebuild the network it was saved from.

Writes <folder>/critic_rejection.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sampler_bound import markdown_table, nearest  # noqa: E402  (benchmarks/, this script's own folder)


def keep_best(scores: np.ndarray, n: int, fraction: float) -> np.ndarray:
    """Indices of the n highest scores among the first round(n / fraction); the first n at 1."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a kept fraction is in (0, 1], not {fraction}")
    pool = round(n / fraction)
    if pool > len(scores):
        raise ValueError(f"keeping {fraction} of {n} needs {pool} candidates, got {len(scores)}")
    return np.arange(n) if pool == n else np.argsort(-scores[:pool], kind="stable")[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "models", type=Path, help="a models/ folder with checkpoints/ and sampler.npz"
    )
    parser.add_argument("overrides", nargs="*", help="the run's Hydra overrides (its critic)")
    parser.add_argument("--keep", default="1,0.75,0.5,0.25", help="kept fractions")
    parser.add_argument("--faces", type=Path, default=ROOT / "data" / "prepared" / "faces.npz")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "fid")
    args = parser.parse_args()
    fractions = [float(f) for f in args.keep.split(",")]

    import pipeline  # noqa: F401  (TensorFlow's settings before Keras loads)
    from pipeline import artifacts, metrics, sampler
    from pipeline.checkpoint import Checkpoint
    from pipeline.config import compose_config
    from pipeline.dataset import load_faces, to_float
    from pipeline.images import to_uint8
    from pipeline.latent import predict
    from pipeline.model import compiled_vae

    folders = [p for p in (args.models / "checkpoints").glob("*") if p.is_dir()]
    if len(folders) != 1:
        sys.exit(f"{args.models}/checkpoints holds {len(folders)} checkpoints: keep the run's one")
    vae = compiled_vae(compose_config(args.overrides), 64)
    if vae.critic is None:
        sys.exit("these overrides build no critic: pass the run's model.adversarial_weight")
    Checkpoint.load(folders[0]).restore(vae)
    saved = artifacts.load_local(args.models)
    mixture = sampler.load(args.models / sampler.FILE)

    def critic_score(images: np.ndarray) -> np.ndarray:
        batches = [images[i : i + 256] for i in range(0, len(images), 256)]
        return np.concatenate([np.asarray(vae.critic(b)).mean(axis=(1, 2, 3)) for b in batches])

    faces = load_faces(args.faces)
    train, val = faces.subset("train"), faces.subset("val")
    n = len(val.images)
    mu, _ = predict(saved.encoder, to_float(train.images), 256)
    mean, std = mu.mean(0), mu.std(0)
    z = mixture.sample(round(n / min(fractions)), 1.0, 0)
    images = np.asarray(predict(saved.decoder, z, 256))
    scores = critic_score(images)
    real = critic_score(to_float(val.images))
    print(f"mean logit: real validation faces {real.mean():.2f}, samples {scores.mean():.2f}")
    ref = metrics.Reference(metrics.cached_inception_features(val.images, args.cache, "val"))
    rows: dict[float, dict] = {}
    for fraction in fractions:
        started = time.perf_counter()
        kept = keep_best(scores, n, fraction)
        feats = metrics.inception_features(to_uint8(images[kept]), desc=f"keep {fraction}")
        rows[fraction] = {
            "val_fid": ref.fid(feats),
            "val_kid": ref.kid(feats, 50, min(1000, n))[0],
            "mean_logit": float(scores[kept].mean()),
            "nn_sample_train": float(
                np.median(nearest((z[kept][:500] - mean) / std, (mu - mean) / std))
            ),
            "seconds": time.perf_counter() - started,
        }
        print(f"keep {fraction}: {rows[fraction]}", flush=True)
    (args.models / "critic_rejection.json").write_text(json.dumps(rows, indent=2) + "\n")
    header = ["kept", "val FID", "val KID", "mean logit", "nearest train code"]
    fields = {"val_fid": ".1f", "val_kid": ".4f", "mean_logit": ".2f", "nn_sample_train": ".2f"}
    cells = [[f"{f:g}", *(format(r[k], s) for k, s in fields.items())] for f, r in rows.items()]
    print("\n" + markdown_table(header, cells))


if __name__ == "__main__":
    main()
