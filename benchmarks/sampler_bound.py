"""Where a trained model's sample FID is lost: in the sampler or in the decoder?

    python benchmarks/sampler_bound.py reports/gpu-h200/b64 --ddpm

For one `models/`-style folder (encoder, decoder, card, sampler.npz), every row is an FID/KID
against the 1,315 validation faces (what model selection ranks by; the test faces are not used
except in the one row that says so), n = as many faces as there are validation faces:

- `mixture`: the model's own sampler (sampler.npz, the ex-post mixture), as `evaluate` draws it;
- `train codes`: the decoded means μ(x) of randomly chosen training faces, and `train posterior`:
  decoded draws z ~ q(z|x) of the same faces. A perfect sampler of the aggregate posterior can do
  no better than these (it would also have to invent new faces, which these do not);
- `val reconstructions`: the validation faces' own reconstructions (paired with the reference), and
  the same set against the test faces (different people): the decoder given a held-out face's code;
- `--ddpm`: a small latent diffusion model (DDPM, ε-predicting residual MLP on the standardised
  training means, Ho et al. 2020) as a second-stage sampler in place of the mixture, with the
  median nearest-training-code distance of its samples beside that of the validation codes (a
  sampler that copied training codes would sit near 0).

Writes <folder>/sampler_bound.json and prints a table.
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


def diffusion_codes(
    x0: np.ndarray, x0_val: np.ndarray, n: int, epochs: int, width: int, seed: int
) -> np.ndarray:
    """n codes from a DDPM trained on x0 (standardised codes); 1,000 ancestral steps."""
    import keras

    keras.utils.set_random_seed(seed)
    steps = 1000
    betas = np.linspace(1e-4, 0.02, steps)  # Ho et al.'s linear schedule
    abar = np.cumprod(1 - betas)

    def embed(t: np.ndarray) -> np.ndarray:
        freqs = np.exp(-np.log(10000) * np.arange(32) / 32)
        angles = t[:, None] * freqs[None]
        return np.concatenate([np.sin(angles), np.cos(angles)], 1).astype(np.float32)

    d = x0.shape[1]
    z_in, t_in = keras.Input((d,)), keras.Input((64,))
    h = keras.layers.Dense(width)(keras.layers.Concatenate()([z_in, t_in]))
    for _ in range(3):  # pre-norm residual blocks
        r = keras.layers.Dense(width, activation="silu")(keras.layers.LayerNormalization()(h))
        h = keras.layers.Add()([h, keras.layers.Dense(width)(r)])
    out = keras.layers.Dense(d)(
        keras.layers.Activation("silu")(keras.layers.LayerNormalization()(h))
    )
    net = keras.Model([z_in, t_in], out)
    rate = keras.optimizers.schedules.CosineDecay(1e-3, epochs * (len(x0) // 256 + 1))
    net.compile(keras.optimizers.Adam(rate), "mse")
    rng = np.random.default_rng(seed)

    def noised(x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        t = rng.integers(0, steps, len(x))
        eps = rng.standard_normal(x.shape).astype(np.float32)
        xt = np.sqrt(abar[t])[:, None] * x + np.sqrt(1 - abar[t])[:, None] * eps
        return [xt.astype(np.float32), embed(t.astype(np.float32))], eps

    for epoch in range(epochs):  # fresh noise levels every epoch
        inputs, eps = noised(x0)
        loss = net.fit(inputs, eps, batch_size=256, epochs=1, verbose=0).history["loss"][0]
        if (epoch + 1) % max(1, epochs // 5) == 0:
            val_inputs, val_eps = noised(x0_val)
            val_loss = net.evaluate(val_inputs, val_eps, batch_size=1024, verbose=0)
            print(f"  ddpm epoch {epoch + 1}: loss {loss:.4f}, val {val_loss:.4f}", flush=True)
    x = rng.standard_normal((n, d)).astype(np.float32)
    for t in range(steps - 1, -1, -1):
        eps = np.asarray(net.predict_on_batch([x, embed(np.full(n, t, np.float32))]))
        x = (x - betas[t] / np.sqrt(1 - abar[t]) * eps) / np.sqrt(1 - betas[t])
        if t > 0:
            var = betas[t] * (1 - abar[t - 1]) / (1 - abar[t])
            x = x + np.sqrt(var) * rng.standard_normal(x.shape).astype(np.float32)
    return x


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, as the README's tables are written."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each row of a's Euclidean distance to its nearest row of b."""
    d2 = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None]
    return np.sqrt(np.maximum(d2.min(1), 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, help="a models/ folder with sampler.npz")
    parser.add_argument("--faces", type=Path, default=ROOT / "data" / "prepared" / "faces.npz")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "fid")
    parser.add_argument("--ddpm", action="store_true", help="also the latent diffusion sampler")
    parser.add_argument("--ddpm-epochs", type=int, default=200)
    parser.add_argument("--ddpm-width", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import pipeline  # noqa: F401  (TensorFlow's settings before Keras loads)
    from pipeline import artifacts, metrics
    from pipeline.dataset import load_faces, to_float
    from pipeline.images import to_uint8
    from pipeline.latent import predict

    faces = load_faces(args.faces)
    train, val, test = faces.subset("train"), faces.subset("val"), faces.subset("test")
    vae = artifacts.load_local(args.models)
    if vae.mixture is None:
        raise SystemExit(f"{args.models} has no sampler.npz: this compares samplers against it")
    ref_val = metrics.Reference(metrics.cached_inception_features(val.images, args.cache, "val"))
    n = len(val.images)
    rng = np.random.default_rng(args.seed)
    mu, log_var = predict(vae.encoder, to_float(train.images), 256)
    mu_val, _ = predict(vae.encoder, to_float(val.images), 256)
    pick = rng.choice(len(mu), n, replace=False)
    rows: dict[str, dict] = {}

    def score(name: str, z: np.ndarray, ref: metrics.Reference = ref_val, **extra) -> None:
        started = time.perf_counter()
        images = np.asarray(predict(vae.decoder, np.asarray(z, np.float32), 256))
        feats = metrics.inception_features(to_uint8(images), desc=name)
        rows[name] = {
            "fid": ref.fid(feats),
            "kid": ref.kid(feats, 50, min(1000, n))[0],
            **extra,
        }
        print(f"{name}: {rows[name]} ({time.perf_counter() - started:.0f} s)", flush=True)

    score("mixture (the model's sampler)", vae.mixture.sample(n, 1.0, args.seed))
    score("train codes μ(x)", mu[pick])
    posterior = mu[pick] + np.exp(0.5 * log_var[pick]) * rng.standard_normal(mu[pick].shape)
    score("train posterior z ~ q(z|x)", posterior)
    score("val reconstructions (paired)", mu_val)
    ref_test = metrics.Reference(metrics.cached_inception_features(test.images, args.cache, "test"))
    score("val reconstructions vs the test faces", mu_val, ref_test)
    if args.ddpm:
        mean, std = mu.mean(0), mu.std(0)
        x0, x0_val = (mu - mean) / std, (mu_val - mean) / std
        started = time.perf_counter()
        x = diffusion_codes(x0, x0_val, n, args.ddpm_epochs, args.ddpm_width, args.seed)
        seconds = time.perf_counter() - started
        score(
            f"latent DDPM ({args.ddpm_epochs} epochs, width {args.ddpm_width})",
            x * std + mean,
            nn_sample_train=float(np.median(nearest(x[:500], x0))),
            nn_val_train=float(np.median(nearest(x0_val[:500], x0))),
            fit_and_sample_s=seconds,
        )
    (args.models / "sampler_bound.json").write_text(json.dumps(rows, indent=2) + "\n")
    cells = [[name, f"{row['fid']:.1f}", f"{row['kid']:.3f}"] for name, row in rows.items()]
    print("\n" + markdown_table(["codes decoded", "FID", "KID"], cells))


if __name__ == "__main__":
    main()
