"""How many mixture components should the ex-post sampler have? Ranked on validation FID.

    python benchmarks/sampler_screen.py models/critic100-from30-s43 --components 1,5,10,20,40,80

`pipeline.sampler.fit_gmm` picks the component count by the validation faces' log-likelihood, a
density criterion; what users see is the faces. For one trained `models/`-style folder this fits a
full-covariance mixture to the training faces' means μ(x) for each count, draws as many codes as
there are validation faces (sampling seed 0, t = 1), decodes them, and scores FID/KID against the
1,315 validation faces (the test faces are not used). Beside each row: the validation
log-likelihood the pipeline would rank by, and the median distance of 500 samples to their nearest
training code in standardised units, beside the validation codes' own (a mixture that copied
training codes would sit near 0: many components on few codes each do that).

Writes <folder>/sampler_screen.json and prints a table.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, help="a models/ folder (encoder, decoder, card)")
    parser.add_argument("--components", default="1,5,10,20,40,80")
    parser.add_argument("--faces", type=Path, default=ROOT / "data" / "prepared" / "faces.npz")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "fid")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = [int(c) for c in args.components.split(",")]

    import pipeline  # noqa: F401  (TensorFlow's settings before Keras loads)
    from pipeline import artifacts, metrics, sampler
    from pipeline.dataset import load_faces, to_float
    from pipeline.images import to_uint8
    from pipeline.latent import predict

    faces = load_faces(args.faces)
    train, val = faces.subset("train"), faces.subset("val")
    vae = artifacts.load_local(args.models)
    ref = metrics.Reference(metrics.cached_inception_features(val.images, args.cache, "val"))
    n = len(val.images)
    mu, _ = predict(vae.encoder, to_float(train.images), 256)
    mu_val, _ = predict(vae.encoder, to_float(val.images), 256)
    mean, std = mu.mean(0), mu.std(0)
    nn_val = float(np.median(nearest((mu_val[:500] - mean) / std, (mu - mean) / std)))
    rows: dict[int, dict] = {}
    for k in counts:
        started = time.perf_counter()
        mixture, scores = sampler.fit_gmm(mu, mu_val, [k], seed=args.seed)
        z = mixture.sample(n, 1.0, args.seed)
        images = np.asarray(predict(vae.decoder, z, 256))
        feats = metrics.inception_features(to_uint8(images), desc=f"{k} components")
        rows[k] = {
            "val_fid": ref.fid(feats),
            "val_kid": ref.kid(feats, 50, min(1000, n))[0],
            "val_loglik": scores[k],
            "nn_sample_train": float(np.median(nearest((z[:500] - mean) / std, (mu - mean) / std))),
            "nn_val_train": nn_val,
            "seconds": time.perf_counter() - started,
        }
        print(f"{k} components: {rows[k]}", flush=True)
    (args.models / "sampler_screen.json").write_text(json.dumps(rows, indent=2) + "\n")
    header = ["components", "val FID", "val KID", "val log-lik."]
    header.append(f"nearest train code (val codes: {nn_val:.2f})")
    fields = {"val_fid": ".1f", "val_kid": ".4f", "val_loglik": ".1f", "nn_sample_train": ".2f"}
    cells = [[str(k), *(format(r[f], s) for f, s in fields.items())] for k, r in rows.items()]
    print("\n" + markdown_table(header, cells))


if __name__ == "__main__":
    main()
