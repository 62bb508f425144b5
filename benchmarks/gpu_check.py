"""GPU check: the project's own training step on an accelerator, measured, then scored here.

Three steps, because the accelerator machine (the `device` tool) has JAX, PyTorch and NumPy on
Python 3.12 but no TensorFlow, no MLflow and no internet, and everything it gets travels with the
working tree (64 MiB in all):

    python benchmarks/gpu_check.py pack                 # here: .gpu/faces.npz + .gpu/wheels/
    bash benchmarks/gpu_check.sh                        # there: train, print img/s and epoch times
    python benchmarks/gpu_check.py score --runs <out>   # here: the project's evaluation, FID included

`pack` stores the train and validation faces as JPEG (quality 95): the prepared faces are 161 MB as
a plain array and do not fit the 64 MiB a device call carries, JPEG does (lossy: the run trains on
re-encoded faces; `score` judges it against the real, lossless test and validation faces). It also
downloads the pure-Python and manylinux wheels the training code needs beyond JAX and NumPy (Keras,
OmegaConf, Hydra, ...) for Python 3.12, and copies the LPIPS weights of the default loss
(data/lpips/alexnet.npz, 9.4 MiB, made by `python -m pipeline.lpips`) beside the faces; `train`
uses the bundle's copy when it is there.

`train` composes conf/ (the default model unless overrides say otherwise), builds the same compiled
VAE that `pipeline.train` trains, feeds it through the same `TrainingInput`, and for each batch
size trains the given epochs, printing each epoch's img/s and seconds. Larger batches take a larger
rate: 5e-4·sqrt(batch/64) (Adam's usual square-root rule), said in the output. Each run's networks,
card and timings go to <out>/b<batch>/. `--cpu` runs it on the CPU (the test suite does, so the
script is not broken when an accelerator comes).

`score` fits each run's ex-post mixture on the training faces' codes (saved beside its networks as
sampler.npz, so each run folder reads like `models/`) and runs `evaluation.evaluate`
(FID/KID from both samplers vs the test and validation faces, PSNR, SSIM, −ELBO), printing a table.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUNDLE = ROOT / ".gpu"
LPIPS_NAME = "alexnet.npz"  # the LPIPS weights, beside the faces in the bundle
# what the training code imports beyond JAX and NumPy, pinned as constraints.txt pins them
WHEELS = [
    "keras",
    "absl-py",
    "rich",
    "markdown-it-py",
    "mdurl",
    "pygments",
    "namex",
    "optree",
    "h5py",
    "typing-extensions",
    "packaging",
    "omegaconf",
    "hydra-core",
    "pyyaml",
    "tqdm",
]
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (28, 27, 17)] + ["manylinux2014_x86_64"]
# pure-Python packages PyPI has only as source: built into a wheel here (pip wheel), not downloaded
SOURCE_ONLY = ["antlr4-python3-runtime"]


# --------------------------------------------------------------------------- pack (here)


def encode_jpeg(images, quality: int) -> tuple[bytes, list[int]]:
    from PIL import Image

    blobs = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=0)
        blobs.append(buf.getvalue())
    return b"".join(blobs), [len(b) for b in blobs]


def pinned(name: str) -> str:
    """`name==version` as constraints.txt pins it (the name as-is when it is not pinned there)."""
    norm = lambda s: s.lower().replace("_", "-")  # noqa: E731
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and norm(line.split("==")[0].strip()) == norm(name):
            return line.split(";")[0].strip()
    return name


def pack(faces_path: Path, out: Path, quality: int, wheels: bool, lpips: Path) -> None:
    import shutil

    import numpy as np

    from pipeline.dataset import load_faces

    faces = load_faces(faces_path)
    keep = np.isin(faces.split, ["train", "val"])
    blob, lengths = encode_jpeg(faces.images[keep], quality)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "faces.npz.tmp.npz"
    np.savez(
        tmp,
        jpeg=np.frombuffer(blob, np.uint8),
        lengths=np.asarray(lengths, np.int64),
        split=faces.split[keep],
        size=np.asarray(faces.image_size),
        quality=np.asarray(quality),
    )
    os.replace(tmp, out / "faces.npz")
    print(
        f"{out / 'faces.npz'}: {keep.sum()} faces as JPEG q{quality}, {len(blob) / 2**20:.1f} MiB"
    )
    if lpips.is_file():
        shutil.copyfile(lpips, out / LPIPS_NAME)
        print(f"{out / LPIPS_NAME}: the LPIPS weights, {lpips.stat().st_size / 2**20:.1f} MiB")
    else:
        print(
            f"no {lpips}: the default model's LPIPS term needs it there (`python -m pipeline.lpips`"
            " here first), or train with model.perceptual_weight=0"
        )
    if wheels:
        target = out / "wheels"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            # pip matches each manylinux tag exactly; newer wheels (optree) carry 2_28
            *itertools.chain.from_iterable(("--platform", p) for p in PLATFORMS),
            "-d",
            str(target),
            *[pinned(w) for w in WHEELS],
        ]
        subprocess.run(cmd, check=True)
        build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(target)]
        subprocess.run([*build, *[pinned(w) for w in SOURCE_ONLY]], check=True)
        size = sum(p.stat().st_size for p in target.glob("*.whl"))
        print(f"{target}: {len(list(target.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB")


def unpack(path: Path):
    """The JPEG bundle back as a Faces object (train and val splits)."""
    import numpy as np
    from PIL import Image

    from pipeline.dataset import Faces

    with np.load(path, allow_pickle=False) as npz:
        blob, lengths, split = npz["jpeg"].tobytes(), npz["lengths"], npz["split"]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    images = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(blob[a:b])).convert("RGB"))
            for a, b in itertools.pairwise(offsets)
        ]
    )
    n = len(images)
    return Faces(
        images, np.zeros(n, "<U1"), np.zeros(n, int), np.zeros((n, 0), np.float32), [], split
    )


# --------------------------------------------------------------------------- train (there)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides)


def train_one(
    faces, faces_dir: Path, batch: int, epochs: int, overrides: list[str], out: Path
) -> dict:
    import keras
    import numpy as np

    from pipeline.callbacks import Schedule
    from pipeline.card import model_card
    from pipeline.dataset import TrainingInput, batches, to_float
    from pipeline.device import describe_device, resolve_device_settings, set_numerics
    from pipeline.model import compiled_vae
    from pipeline.schema import validate_train_config

    lr = 5e-4 * math.sqrt(batch / 64)
    lpips = faces_dir / LPIPS_NAME
    cfg = compose(
        [
            f"train.batch_size={batch}",
            f"train.epochs={epochs}",
            f"train.learning_rate={lr}",
            *([f"model.perceptual_weights={lpips.resolve()}"] if lpips.is_file() else []),
            *overrides,
        ]
    )
    cfg = resolve_device_settings(validate_train_config(cfg, faces.image_size))
    set_numerics(cfg)
    train, val = faces.subset("train"), faces.subset("val")
    steps = math.ceil(len(train.images) / batch)
    vae = compiled_vae(cfg, faces.image_size, steps_per_epoch=steps)
    feed = TrainingInput(train.images, batch, cfg.train.seed, epochs, hflip=cfg.train.hflip)
    rows: list[dict] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.perf_counter()

        def on_test_begin(self, logs: dict | None = None) -> None:
            self.trained = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            end = time.perf_counter()
            row = {
                "epoch": epoch + 1,
                "img_per_s": len(train.images) / (self.trained - self.started),
                "epoch_s": end - self.started,
                **{k: float(v) for k, v in (logs or {}).items()},
            }
            rows.append(row)
            print(
                f"  b{batch} epoch {epoch + 1}/{epochs}: {row['img_per_s']:.0f} img/s, "
                f"{row['epoch_s']:.2f} s, val_loss {row.get('val_loss', float('nan')):.1f}",
                flush=True,
            )

    started = time.perf_counter()
    vae.fit(
        feed.data,
        epochs=epochs,
        validation_data=batches(val.images, batch),
        callbacks=[feed.callback, Schedule(cfg), Clock()],
        verbose=0,
    )
    wall = time.perf_counter() - started
    if not all(math.isfinite(r["loss"]) for r in rows):
        raise SystemExit(f"batch {batch}: the loss became non-finite; lower the learning rate")
    z_mean, z_log_var = vae.encoder.predict(to_float(train.images), batch_size=512, verbose=0)
    card = model_card(cfg, vae, train.images, z_mean, z_log_var, f"gpu-check-b{batch}", epochs)
    folder = out / f"b{batch}"
    folder.mkdir(parents=True, exist_ok=True)
    vae.encoder.save(folder / "encoder.keras")
    vae.decoder.save(folder / "decoder.keras")
    (folder / "vae.json").write_text(json.dumps(card, indent=2) + "\n")
    # the first epoch includes compilation; the rest are the steady state
    steady = rows[1:] or rows
    result = {
        "device": describe_device(),
        "backend": keras.backend.backend(),
        "batch_size": batch,
        "learning_rate": lr,
        "epochs": epochs,
        "train_images": len(train.images),
        "img_per_s": float(np.median([r["img_per_s"] for r in steady])),
        "epoch_s": float(np.median([r["epoch_s"] for r in steady])),
        "first_epoch_s": rows[0]["epoch_s"],
        "wall_s": wall,
        "final_val_loss": rows[-1].get("val_loss"),
        "overrides": overrides,
        "history": rows,
    }
    (folder / "timing.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def train_all(args: argparse.Namespace) -> None:
    if args.cpu:  # before JAX or Keras is imported
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    faces = unpack(args.data)
    if args.images:
        faces = faces.__class__(
            faces.images[: args.images],
            faces.person[: args.images],
            faces.imagenum[: args.images],
            faces.attributes[: args.images],
            faces.attribute_names,
            faces.split[: args.images],
        )
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        print(f"batch {batch}: {args.epochs} epochs", flush=True)
        results.append(
            train_one(faces, args.data.parent, batch, args.epochs, args.overrides, args.out)
        )
    print("\n| device | backend | batch | lr | img/s | epoch s | first epoch s | total s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['device']} | {r['backend']} | {r['batch_size']} | {r['learning_rate']:.2e} | "
            f"{r['img_per_s']:.0f} | {r['epoch_s']:.2f} | {r['first_epoch_s']:.1f} | {r['wall_s']:.0f} |"
        )


# --------------------------------------------------------------------------- score (here)


def score(args: argparse.Namespace) -> None:
    from pipeline import artifacts, sampler
    from pipeline.dataset import load_faces, to_float
    from pipeline.evaluation import evaluate

    faces = load_faces(args.faces)
    cfg = compose(args.overrides)
    train, val = faces.subset("train"), faces.subset("val")
    rows = []
    for folder in sorted(p.parent for p in args.runs.glob("b*/vae.json")):
        vae = artifacts.load_local(folder)
        z_train, _ = vae.encoder.predict(to_float(train.images), batch_size=256, verbose=0)
        z_val, _ = vae.encoder.predict(to_float(val.images), batch_size=256, verbose=0)
        mixture, _ = sampler.fit_gmm(z_train, z_val, list(cfg.sampler.components), cfg.sampler.seed)
        vae.mixture = mixture
        mixture.save(folder / sampler.FILE)  # the folder is then a models/ folder (picture.py)
        result = evaluate(cfg, vae, faces, folder / "evaluation")
        timing = json.loads((folder / "timing.json").read_text())
        rows.append({**timing, **result})
        print(
            f"{folder.name}: {json.dumps({k: result.get(k) for k in ('fid', 'val_fid', 'psnr')})}"
        )
    head = "| device | batch | epochs | img/s | epoch s | val FID | FID | KID | FID recon. | PSNR |"
    print("\n" + head + "\n|" + " --- |" * 10)
    for r in rows:
        print(
            f"| {r['device']} | {r['batch_size']} | {r['epochs']} | {r['img_per_s']:.0f} | "
            f"{r['epoch_s']:.2f} | {r.get('val_fid', float('nan')):.1f} | "
            f"{r.get('fid', float('nan')):.1f} | {r.get('kid', float('nan')):.3f} | "
            f"{r.get('fid_reconstructions', float('nan')):.1f} | {r['psnr']:.2f} |"
        )
    (args.runs / "scores.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("pack", help="here: the JPEG face bundle and the wheels for the device")
    p.add_argument("--faces", type=Path, default=ROOT / "data" / "prepared" / "faces.npz")
    p.add_argument("--out", type=Path, default=BUNDLE)
    p.add_argument("--quality", type=int, default=95)
    p.add_argument("--no-wheels", action="store_true", help="only the faces")
    p.add_argument("--lpips", type=Path, default=ROOT / "data" / "lpips" / LPIPS_NAME)
    t = sub.add_parser("train", help="on the device (or --cpu): train and time each batch size")
    t.add_argument("--data", type=Path, default=BUNDLE / "faces.npz")
    t.add_argument("--epochs", type=int, default=50)
    t.add_argument("--batch-sizes", default="64,1024")
    t.add_argument("--images", type=int, default=0, help="use only the first N faces (0 = all)")
    t.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    t.add_argument("--cpu", action="store_true", help="run on the CPU")
    t.add_argument("overrides", nargs="*", help="Hydra overrides of conf/ (e.g. model=seed)")
    s = sub.add_parser("score", help="here: the project's evaluation of each trained run")
    s.add_argument("--runs", type=Path, required=True)
    s.add_argument("--faces", type=Path, default=ROOT / "data" / "prepared" / "faces.npz")
    s.add_argument("overrides", nargs="*", help="Hydra overrides (e.g. evaluate.n_samples=500)")
    args = parser.parse_args()
    if args.step == "pack":
        pack(args.faces, args.out, args.quality, not args.no_wheels, args.lpips)
    elif args.step == "train":
        train_all(args)
    else:
        score(args)


if __name__ == "__main__":
    main()
