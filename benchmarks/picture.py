"""The README's results picture: real test faces, then new faces from each trained model given.

    python benchmarks/picture.py --out benchmarks/results/samples-50-epochs.png \
        "seed=reports/quality/seed/models@prior" "default=models"

Each model is a `models/` folder (what `pipeline.artifacts.load_local` reads), sampled from its
ex-post mixture, or from the prior N(0, I) with `@prior` (the notebook's `seed` model samples
better from it); temperature 1 and the same seed for every model. The real faces are every k-th
test face; no face is picked by hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="label=folder, one per model, in row order")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--faces", type=Path, default=ROOT / "data" / "prepared" / "faces.npz")
    parser.add_argument("-n", type=int, default=16, help="faces per row block")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = [m.split("=", 1) for m in args.models]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit("give each model as label=folder or label=folder@prior")

    from pipeline.artifacts import load_local
    from pipeline.dataset import load_faces
    from pipeline.images import save_labelled_rows
    from pipeline.latent import sample_faces

    test = load_faces(args.faces).subset("test")
    every_kth = test.images[:: max(1, len(test.images) // args.n)][: args.n]  # spread over people
    blocks = [("real (test)", every_kth)]
    for label, spec in pairs:
        folder, _, sampler = spec.partition("@")
        vae = load_local(Path(folder))
        mixture = None if sampler == "prior" else vae.mixture
        faces = sample_faces(
            vae.decoder, args.n, vae.card["latent_dim"], 1.0, args.seed, mixture=mixture
        )
        blocks.append((f"{label}\n({'prior' if mixture is None else 'mixture'})", faces))
    print(f"wrote {save_labelled_rows(blocks, args.out, rows_per_block=2)}")


if __name__ == "__main__":
    main()
