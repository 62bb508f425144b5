"""Does a speed switch cost model quality? Train the same model with switches on and off, judge the
saved networks, not the training-time loss.

    python benchmarks/fast_path.py [--model conv] [--epochs 3] [--seeds 2] [--fid-n 500]
                                   [--arms plain,defaults,...] [--json reports/fast_path.json]

Each arm is a set of Hydra overrides on top of the config's defaults (see ARMS), trained through
pipeline.train's own `compiled_vae` and input, each run in a fresh spawned process. After the same
epochs every run is judged the same way, on the saved float32 networks (`float32_networks`, what
`pipeline.train` writes to disk):

- val BCE at z = μ(x): the notebook's reconstruction loss (nats per image) decoding the posterior
  mean of every validation face. The training-time validation loss samples z, and its noise hides
  differences of this size, so it is printed beside it but never used as the judge.
- the same number computed by the training model itself (its own precision): if the two differ,
  the export changed the networks.
- val PSNR at z = μ, and FID of `--fid-n` faces sampled from N(0, I) against the test faces (the
  standard FID Inception network, as `pipeline.evaluate`; fixed noise, so runs compare).
- train images/s (train steps only; the first epoch compiles and is not timed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import pipeline  # noqa: E402, F401  (sets TensorFlow's oneDNN flag before anything imports it)

PLAIN = [
    "train.mixed_precision=false",
    "train.fused_adam=false",
    "train.steps_per_execution=1",
]
ARMS: dict[str, list[str]] = {
    "plain": PLAIN,
    "defaults": [],
    "bf16": ["train.mixed_precision=bfloat16"],  # bfloat16 with μ, log σ² and the output float32
    "bf16-all": ["train.mixed_precision=bfloat16", "train.float32_layers=[]"],  # before the fix
    "only-bf16-all": [
        "train.mixed_precision=bfloat16",
        "train.float32_layers=[]",
        "train.fused_adam=false",
        "train.steps_per_execution=1",
    ],
    "only-bf16-f32latent": [
        "train.mixed_precision=bfloat16",
        "train.float32_layers=[latent]",
        "train.fused_adam=false",
        "train.steps_per_execution=1",
    ],
    "only-bf16-f32output": [
        "train.mixed_precision=bfloat16",
        "train.float32_layers=[output]",
        "train.fused_adam=false",
        "train.steps_per_execution=1",
    ],
    "only-fused": ["train.mixed_precision=false", "train.steps_per_execution=1"],
    "only-spe8": ["train.mixed_precision=false", "train.fused_adam=false"],
}


def test_features(data: str) -> np.ndarray:
    """Inception features of the test faces, computed once per prepared file (by its digest)."""
    from pipeline.checksums import file_sha256
    from pipeline.dataset import load_faces
    from pipeline.metrics import inception_features

    cache = ROOT / "reports" / "cache" / f"test_inception_{file_sha256(data)[:16]}.npy"
    if cache.exists():
        return np.load(cache)
    feats = inception_features(load_faces(data).subset("test").images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, feats)
    return feats


def measure(
    arm: str, model: str, seed: int, epochs: int, data: str, fid_n: int, queue: Any
) -> None:
    import keras
    from keras import ops

    from pipeline.artifacts import float32_networks
    from pipeline.callbacks import Schedule
    from pipeline.config import compose_config
    from pipeline.dataset import TrainingInput, batches, load_faces, to_float
    from pipeline.device import resolve_device_settings, set_numerics
    from pipeline.images import to_uint8
    from pipeline.losses import reconstruction_nll
    from pipeline.metrics import fid_from_features, inception_features, psnr
    from pipeline.model import compiled_vae

    faces = load_faces(data)
    train, val = faces.subset("train").images, faces.subset("val").images
    cfg = resolve_device_settings(
        compose_config(
            [f"model={model}", f"train.epochs={epochs}", f"train.seed={seed}", *ARMS[arm]]
        )
    )
    set_numerics(cfg)
    vae = compiled_vae(cfg, faces.image_size)
    stepping: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.first = None

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            if self.first is None:
                self.first = time.perf_counter()

        def on_test_begin(self, logs: dict | None = None) -> None:
            int(self.model.optimizer.iterations)  # wait for the queued train steps
            stepping.append(time.perf_counter() - self.first)

    feed = TrainingInput(train, cfg.train.batch_size, cfg.train.seed, epochs)
    history = vae.fit(
        feed.data,
        epochs=epochs,
        validation_data=batches(val, cfg.train.batch_size),
        callbacks=[feed.callback, Schedule(cfg), Timer()],
        verbose=0,
    ).history

    x = to_float(val)

    def bce_at_mean(encoder: Any, decoder: Any) -> tuple[float, np.ndarray]:
        z_mean, _ = encoder.predict(x, batch_size=256, verbose=0)
        x_hat = np.asarray(decoder.predict(z_mean, batch_size=256, verbose=0), np.float32)
        nll = reconstruction_nll(x, x_hat, cfg.model.likelihood)
        return float(np.mean(ops.convert_to_numpy(nll))), x_hat

    trained_bce, _ = bce_at_mean(vae.encoder, vae.decoder)
    enc32, dec32 = float32_networks(cfg.model, vae.encoder, vae.decoder, faces.image_size)
    saved_bce, x_hat = bce_at_mean(enc32, dec32)
    z = np.random.default_rng(0).standard_normal((fid_n, cfg.model.latent_dim)).astype("float32")
    samples = to_uint8(np.asarray(dec32.predict(z, batch_size=256, verbose=0)))
    fid = fid_from_features(inception_features(samples), test_features(data))
    steady = stepping[1:] or stepping
    t = cfg.train
    queue.put(
        {
            "arm": arm,
            "model": model,
            "seed": seed,
            "epochs": epochs,
            "settings": f"{t.mixed_precision or 'float32'} (float32: {list(t.float32_layers)}), "
            f"{'fused' if t.fused_adam else 'Keras'} Adam, {t.steps_per_execution} steps/call",
            "val_loss_logged": float(history["val_loss"][-1]),
            "val_bce_mu_trained": trained_bce,
            "val_bce_mu_saved": saved_bce,
            "val_psnr_mu": float(np.mean(psnr(x, x_hat))),
            "fid": fid,
            "fid_n": fid_n,
            "images_per_s": len(train) / (sum(steady) / len(steady)),
        }
    )


def in_child(*args: Any) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=measure, args=(*args, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/prepared/faces.npz")
    parser.add_argument("--model", default="conv")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--fid-n", type=int, default=500)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--json", type=Path, help="append one JSON line per run")
    args = parser.parse_args()
    test_features(args.data)  # once, before the children need it
    runs = []
    for arm in args.arms.split(","):
        for seed in range(42, 42 + args.seeds):
            r = in_child(arm, args.model, seed, args.epochs, args.data, args.fid_n)
            runs.append(r)
            print(json.dumps(r), flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                with args.json.open("a") as fh:
                    fh.write(json.dumps(r) + "\n")
    print(
        f"\n{args.model}, {args.epochs} epochs, seeds 42..{41 + args.seeds}; mean (± sd over seeds)"
    )
    cols = ["val_loss_logged", "val_bce_mu_trained", "val_bce_mu_saved", "val_psnr_mu", "fid"]
    print(f"{'arm':22s}" + "".join(f"{c:>22s}" for c in [*cols, "images_per_s"]))
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        cells = []
        for c in [*cols, "images_per_s"]:
            v = np.array([r[c] for r in mine])
            cells.append(f"{v.mean():.2f} ± {v.std():.2f}" if len(v) > 1 else f"{v[0]:.2f}")
        print(f"{arm:22s}" + "".join(f"{c:>22s}" for c in cells) + f"   {mine[0]['settings']}")


if __name__ == "__main__":
    main()
