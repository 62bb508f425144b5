"""Training speed: the notebook's way vs this project's, side by side on the same data.

    python benchmarks/train_speed.py [--data data/prepared/faces.npz] [--epochs 3] [--images 0]
                                     [--batch-sizes 64,256] [--raw data/raw/lfw-deepfunneled]
                                     [--json reports/speed.json]

Each measurement runs in its own fresh child process (spawned by this one), so its peak memory
is its own and no compiled graph or global Keras state leaks from one to the next:

(a) notebook: the seed architecture, a float32 NumPy array of the whole set into model.fit, a
    Python-side GradientTape `train_step`, Keras Adam, float32, batch 64 (TensorFlow only, as the
    notebook was).
(b) ours: pipeline.train's own `compiled_vae` with the config's defaults resolved for this device
    (fused Adam, bfloat16 compute where the hardware is fast at it, steps_per_execution), uint8
    data gathered per batch by pipeline.dataset, validation every epoch as training does it.
    Also the default `conv` model, and --batch-sizes beyond 64.

images/s counts training steps only (the first epoch, which compiles, is reported apart; the
validation pass is timed apart). After the same epochs every run's weights are scored the same
way: the float32 negative ELBO on the validation split with fixed noise (lower is better). The
50-epoch figure is first epoch + 49 steady epochs (validation included) scaled to the full train
split. With --raw, the prepare stage's decode is timed against the notebook's serial loop.
Prints a table and one JSON line (device, backend, versions, peak RSS, GPU memory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import pipeline  # noqa: E402, F401  (sets TensorFlow's oneDNN flag before anything imports it)

# --------------------------------------------------------------------------- child side


def notebook_model(encoder: Any, decoder: Any) -> Any:
    """The seed notebook's model class: keras.io's VAE with a TensorFlow GradientTape train_step."""
    import keras
    import tensorflow as tf
    from keras import layers, ops

    class Sampling(layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(1337)

        def call(self, inputs: tuple) -> Any:
            z_mean, z_log_var = inputs
            eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * eps

    class NotebookVAE(keras.Model):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.encoder, self.decoder, self.sampling = encoder, decoder, Sampling()
            self.total_loss_tracker = keras.metrics.Mean(name="total_loss")

        def train_step(self, data: Any) -> dict:
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

    return NotebookVAE()


def validation_loss(cfg: Any, encoder: Any, decoder: Any, val: np.ndarray) -> float:
    """The same yardstick for every run: float32 -ELBO on the validation split, fixed noise."""

    from pipeline.artifacts import float32_networks
    from pipeline.dataset import batches
    from pipeline.model import VAE

    enc32, dec32 = float32_networks(cfg.model, encoder, decoder, 64)
    judge = VAE(enc32, dec32, 1.0, cfg.model.likelihood, seed=123)
    judge.compile()
    return float(judge.evaluate(batches(val, 256), verbose=0, return_dict=True)["loss"])


def measure(
    way: str, model: str, batch: int, seed: int, data: str, n_images: int, epochs: int, queue: Any
) -> None:
    """One measurement in this (fresh) process; puts a result dict on the queue."""
    import keras

    from pipeline.callbacks import Schedule
    from pipeline.config import compose_config
    from pipeline.dataset import TrainingInput, batches, load_faces
    from pipeline.device import describe_device, resolve_device_settings, set_numerics
    from pipeline.model import compiled_vae

    if Path(data).exists():
        faces = load_faces(data)
        train, val = faces.subset("train").images, faces.subset("val").images
        full_train = len(train)
    else:  # no prepared data: face-sized noise (speed does not depend on content)
        rng = np.random.default_rng(0)
        train = rng.integers(0, 256, (n_images or 2048, 64, 64, 3), dtype=np.uint8)
        val, full_train = train[:256], 10_513
    train = train[: n_images or None]
    cfg = resolve_device_settings(
        compose_config(
            [
                f"model={model}",
                f"train.batch_size={batch}",
                f"train.epochs={epochs}",
                f"train.seed={seed}",
            ]
        )
    )

    seconds: list[float] = []  # whole epochs, validation included
    stepping: list[float] = []  # first train step to last train step finished
    setup: list[float] = []  # epoch start to first train step (the input iterator's set-up)

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start, self.first, self.done = time.perf_counter(), None, None

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            if self.first is None:
                self.first = time.perf_counter()

        def training_done(self) -> None:
            if self.done is None:
                int(self.model.optimizer.iterations)  # wait for the queued train steps
                self.done = time.perf_counter()

        def on_test_begin(self, logs: dict | None = None) -> None:
            self.training_done()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.training_done()
            seconds.append(time.perf_counter() - self.start)
            stepping.append(self.done - self.first)
            setup.append(self.first - self.start)

    if way == "notebook":
        from pipeline.networks import build_model

        keras.backend.clear_session()
        keras.utils.set_random_seed(cfg.train.seed)
        keras.mixed_precision.set_global_policy("float32")
        encoder, decoder = build_model(cfg.model)
        vae = notebook_model(encoder, decoder)
        vae.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate))
        array = train.astype("float32") / 255.0  # the notebook held the whole set as float32
        vae.fit(array, epochs=epochs, batch_size=batch, verbose=0, callbacks=[Timer()])
        settings = "float32, Keras Adam, Python train_step, NumPy float32 input"
    else:
        set_numerics(cfg)
        vae = compiled_vae(cfg, 64)
        encoder, decoder = vae.encoder, vae.decoder
        feed = TrainingInput(train, batch, cfg.train.seed, epochs)
        vae.fit(
            feed.data,
            epochs=epochs,
            validation_data=batches(val, batch) if len(val) else None,
            verbose=0,
            callbacks=[feed.callback, Schedule(cfg), Timer()],
        )
        t = cfg.train
        settings = (
            f"{t.mixed_precision or 'float32'}, {'fused' if t.fused_adam else 'Keras'} Adam, "
            f"{t.steps_per_execution} steps/call, XLA {t.jit_compile}, uint8 input"
        )

    steady = slice(1, None) if len(seconds) > 1 else slice(None)  # epoch 1 compiles
    mean = lambda xs: sum(xs[steady]) / len(xs[steady])  # noqa: E731
    scale = full_train / len(train)  # a subset's training time, scaled to the full train split
    scaled = [
        e + (st + su) * (scale - 1) for e, st, su in zip(seconds, stepping, setup, strict=True)
    ]
    queue.put(
        {
            "way": way,
            "model": model,
            "batch_size": batch,
            "seed": seed,
            "settings": settings,
            "images_per_s": len(train) / mean(stepping),
            "wall_images_per_s": len(train) / (mean(stepping) + mean(setup)),
            "first_epoch_s": seconds[0],
            "epoch_s": seconds,
            "input_setup_s": setup,
            "baseline_50_epochs_s": scaled[0] + 49 * mean(scaled),
            "val_loss": validation_loss(cfg, encoder, decoder, val) if len(val) else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "gpu_peak_mb": gpu_peak_mb(),
            "device": describe_device(),
            "backend": keras.backend.backend(),
            "images": len(train),
            "epochs": epochs,
        }
    )


def gpu_peak_mb() -> float | None:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        stats = gpus[0].memory_stats() if gpus else None
        return stats["peak_bytes_in_use"] / 2**20 if stats else None
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return None


# --------------------------------------------------------------------------- parent side


def in_child(*args: Any) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=measure, args=(*args, queue))
    child.start()
    result = queue.get()  # before join: a large result must be read for the child to exit
    child.join()
    return result


def prepare_speed(raw: Path, attributes: Path | None) -> dict:
    """Decode+crop+resize of every JPEG: ours vs the notebook's serial loop; then the whole
    prepare stage (join, split, npz, grid) into a temporary folder."""
    import tempfile

    from benchmarks.prepare_speed import notebook_serial
    from pipeline.config import compose_config
    from pipeline.lfw import IMAGES_DIRNAME
    from pipeline.prepare import CropSpec, decode_faces, prepare

    paths = sorted((raw / IMAGES_DIRNAME).rglob("*.jpg"))
    for path in paths:  # warm the page cache so every variant reads from memory
        path.read_bytes()
    t = time.perf_counter()
    notebook_serial(paths)
    serial_s = time.perf_counter() - t
    t = time.perf_counter()
    decode_faces(paths, CropSpec(), workers=0)
    ours_s = time.perf_counter() - t
    attributes = attributes or raw / "lfw_attributes.txt"  # where the pipeline puts it
    overrides = (
        [f"data.attributes_file={attributes}"] if attributes.exists() else ["data.attributes=false"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        counts = prepare(compose_config(overrides).data, raw, Path(tmp), Path(tmp))
        stage_s = time.perf_counter() - t
    return {
        "jpegs": len(paths),
        "serial_img_per_s": len(paths) / serial_s,
        "ours_img_per_s": len(paths) / ours_s,
        "stage_faces": counts["images"],
        "stage_s": stage_s,
    }


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return {k: rounded(v) for k, v in value.items()} if isinstance(value, dict) else value


def versions() -> dict:
    import importlib.metadata as md

    found = {}
    for package in ("keras", "tensorflow", "jax", "jaxlib", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            found[package] = md.version(package)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/prepared/faces.npz")
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is not timed")
    parser.add_argument("--images", type=int, default=0, help="train images per epoch (0: all)")
    parser.add_argument("--batch-sizes", default="64", help="ours, seed model: e.g. 64,256,1024")
    parser.add_argument("--seeds", type=int, default=1, help="repeat the seed-model pair")
    parser.add_argument(
        "--raw", type=Path, help="data/raw (holding lfw-deepfunneled/): time prepare"
    )
    parser.add_argument("--attributes", type=Path, help="default: RAW/lfw_attributes.txt")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import os

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    common = (args.data, args.images, args.epochs)
    runs = []
    for seed in range(42, 42 + args.seeds):
        if backend == "tensorflow":
            runs.append(in_child("notebook", "seed", 64, seed, *common))
        runs.append(in_child("ours", "seed", 64, seed, *common))
    for batch in [int(b) for b in args.batch_sizes.split(",") if int(b) != 64]:
        runs.append(in_child("ours", "seed", batch, 42, *common))
    runs.append(in_child("ours", "conv", 64, 42, *common))

    name = {"notebook": "notebook's way", "ours": "ours"}
    print(f"\ndevice: {runs[0]['device']}   backend: {runs[0]['backend']}   {versions()}")
    print(f"train images per epoch: {runs[0]['images']}, epochs: {args.epochs} (first not timed)")
    print("img/s: train steps only; wall img/s: also the input's per-epoch set-up\n")
    gpu = any(r["gpu_peak_mb"] for r in runs)
    print(
        f"{'run':42s}{'img/s':>8s}{'wall img/s':>11s}{'1st epoch s':>12s}{'50 ep. min':>11s}"
        f"{'val -ELBO':>11s}{'RSS MB':>8s}" + (f"{'GPU MB':>8s}" if gpu else "") + "   settings"
    )
    for r in runs:
        label = f"{r['model']}, {name[r['way']]}, batch {r['batch_size']}"
        label += f", seed {r['seed']}" if args.seeds > 1 else ""
        val = f"{r['val_loss']:11.1f}" if r["val_loss"] is not None else f"{'-':>11s}"
        line = (
            f"{label:42s}{r['images_per_s']:8.1f}{r['wall_images_per_s']:11.1f}"
            f"{r['first_epoch_s']:12.1f}{r['baseline_50_epochs_s'] / 60:11.1f}{val}"
            f"{r['peak_rss_mb']:8.0f}"
        )
        if gpu:
            line += f"{r['gpu_peak_mb'] or 0:8.0f}"
        print(line + f"   {r['settings']}")
    result: dict[str, Any] = {
        "device": runs[0]["device"],
        "backend": runs[0]["backend"],
        "versions": versions(),
        "python": platform.python_version(),
        "runs": [rounded(r) for r in runs],
    }
    if backend == "tensorflow":
        summary = {}
        for way in ("notebook", "ours"):
            pair = [
                r
                for r in runs
                if r["way"] == way and r["model"] == "seed" and r["batch_size"] == 64
            ]
            loss = np.array([r["val_loss"] for r in pair])
            summary[way] = {
                "images_per_s": np.mean([r["images_per_s"] for r in pair]),
                "wall_images_per_s": np.mean([r["wall_images_per_s"] for r in pair]),
                "val_loss": loss.mean(),
                "val_loss_sd": loss.std(),
            }
        ours, notebook = summary["ours"], summary["notebook"]
        result["seed_speedup_vs_notebook"] = {
            "steps": round(ours["images_per_s"] / notebook["images_per_s"], 2),
            "wall": round(ours["wall_images_per_s"] / notebook["wall_images_per_s"], 2),
        }
        result["seed_val_loss"] = {w: round(v["val_loss"], 1) for w, v in summary.items()}
        print(
            f"\nseed at batch 64, ours / notebook's way: {result['seed_speedup_vs_notebook']['steps']:.2f}x"
            f" images/s in train steps, {result['seed_speedup_vs_notebook']['wall']:.2f}x wall"
        )
        print(
            f"val -ELBO after {args.epochs} epochs (mean of {args.seeds} seed(s)): "
            + ", ".join(
                f"{w} {v['val_loss']:.1f} ± {v['val_loss_sd']:.1f}" for w, v in summary.items()
            )
        )
    if args.raw:
        prep = prepare_speed(args.raw, args.attributes)
        result["prepare"] = {k: round(v, 2) for k, v in prep.items()}
        print(
            f"prepare: decode+crop+resize of {prep['jpegs']} JPEGs: ours {prep['ours_img_per_s']:.0f} img/s"
            f" vs the serial loop {prep['serial_img_per_s']:.0f} img/s"
            f" = {prep['ours_img_per_s'] / prep['serial_img_per_s']:.2f}x;"
            f" whole stage ({prep['stage_faces']} faces to faces.npz + grid) {prep['stage_s']:.1f} s"
        )
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
