"""Training speed: the notebook's way vs this project's, side by side in one process, same data.

    python benchmarks/train_speed.py [--data data/prepared/faces.npz] [--images 2048] [--epochs 2] [--json out.json]

(a) notebook: a float32 NumPy array into model.fit, a Python-side `train_step` with GradientTape
    (TensorFlow only, as the notebook was), batch 64, seed architecture, Adam defaults.
(b) ours: pipeline.model.VAE (loss in compute_loss, each backend's compiled step), uint8 data
    gathered per batch by pipeline.dataset, steps_per_execution from conf/train.
Also the default `conv` model with (b). The first epoch (tracing, compilation) is excluded from the
images/s. Prints a table and one JSON line with the device, backend and versions.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.config import compose_config
from pipeline.dataset import training_batches
from pipeline.model import VAE, build_model
from pipeline.train import describe_device


class Sampling(layers.Layer):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, inputs: tuple) -> object:
        z_mean, z_log_var = inputs
        eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps


class NotebookVAE(keras.Model):
    """The seed notebook's model class: keras.io's VAE with a TensorFlow GradientTape train_step."""

    def __init__(self, encoder: keras.Model, decoder: keras.Model, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.encoder, self.decoder, self.sampling = encoder, decoder, Sampling()
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")

    def train_step(self, data: object) -> dict:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            z_mean, z_log_var = self.encoder(data)
            reconstruction = self.decoder(self.sampling((z_mean, z_log_var)))
            reconstruction_loss = ops.mean(
                ops.sum(keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2))
            )
            kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
            total_loss = reconstruction_loss + ops.mean(ops.sum(kl_loss, axis=1))
        grads = tape.gradient(total_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        self.total_loss_tracker.update_state(total_loss)
        return {"loss": self.total_loss_tracker.result()}


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def images_per_s(n: int, timer: EpochTimer) -> float:
    steady = timer.seconds[1:] or timer.seconds  # epoch 1 includes tracing and compilation
    return n / (sum(steady) / len(steady))


def notebook_way(images_u8: np.ndarray, epochs: int) -> float:
    keras.utils.set_random_seed(0)
    cfg = compose_config(["model=seed"]).model
    encoder, decoder = build_model(cfg)
    vae = NotebookVAE(encoder, decoder)
    vae.compile(optimizer=keras.optimizers.Adam())
    data = images_u8.astype("float32") / 255.0  # the notebook held the whole set as float32
    timer = EpochTimer()
    vae.fit(data, epochs=epochs, batch_size=64, verbose=0, callbacks=[timer])
    return images_per_s(len(data), timer)


def our_way(images_u8: np.ndarray, epochs: int, model: str, overrides: list[str]) -> float:
    cfg = compose_config([f"model={model}", *overrides])
    keras.utils.set_random_seed(0)
    vae = VAE(*build_model(cfg.model), cfg.model.beta, cfg.model.likelihood)
    vae.compile(
        optimizer=keras.optimizers.Adam(cfg.train.learning_rate),
        steps_per_execution=cfg.train.steps_per_execution,
        jit_compile=cfg.train.jit_compile,
    )
    timer = EpochTimer()
    batch = cfg.train.batch_size
    vae.fit(
        training_batches(images_u8, batch, 0, 0, epochs),
        epochs=epochs,
        steps_per_epoch=math.ceil(len(images_u8) / batch),
        verbose=0,
        callbacks=[timer],
    )
    return images_per_s(len(images_u8), timer)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("data/prepared/faces.npz"))
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.data.exists():
        with np.load(args.data) as npz:
            images = npz["images"][npz["split"] == "train"][: args.images]
        source = str(args.data)
    else:  # no prepared data: random faces-sized images (speed does not depend on content)
        images = np.random.default_rng(0).integers(0, 256, (args.images, 64, 64, 3), dtype=np.uint8)
        source = "random uint8"
    rows = {}
    if keras.backend.backend() == "tensorflow":
        rows["seed, notebook's way"] = notebook_way(images, args.epochs)
    rows["seed, ours"] = our_way(images, args.epochs, "seed", [])
    rows["conv (default), ours"] = our_way(images, args.epochs, "conv", [])
    import importlib.metadata as md

    result = {
        "device": describe_device(),
        "backend": keras.backend.backend(),
        "images": len(images),
        "data": source,
        "batch_size": 64,
        "epochs_timed": args.epochs - 1,
        "images_per_s": {k: round(v, 1) for k, v in rows.items()},
        "versions": {
            p: md.version(p) for p in ("keras", "tensorflow", "jax", "numpy") if _installed(p)
        },
        "python": platform.python_version(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if "seed, notebook's way" in rows:
        result["seed_speedup_vs_notebook"] = round(
            rows["seed, ours"] / rows["seed, notebook's way"], 2
        )
    print(f"{'':26s}{'images/s':>10s}")
    for name, value in rows.items():
        print(f"{name:26s}{value:10.1f}")
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _installed(package: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(package)
        return True
    except md.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
