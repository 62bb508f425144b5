"""prepare stage: crop, resize, join with the attributes, split by person, write one array file.

Output (data/prepared/faces.npz, uncompressed so training loads it in well under a second):
  images           uint8 (N, size, size, 3)
  person           str   (N,)   e.g. "Aaron_Eckhart"
  imagenum         int32 (N,)
  attributes       float32 (N, 73)  (0 columns when attributes are disabled)
  attribute_names  str   (73,)
  split            str   (N,)   "train" | "val" | "test", person-disjoint
Plus samples.png (a grid of faces) and reports/prepare.json (counts DVC tracks as metrics).
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.attributes import parse_attributes
from pipeline.errors import PrepareError, exit_on_pipeline_error
from pipeline.images import save_grid
from pipeline.lfw import IMAGES_DIRNAME, image_path, list_images, recorded_source

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class CropSpec:
    size_in: int = 250
    crop: int = 80
    size: int = 64
    resample: str = "lanczos"


def load_face(path: str, spec: CropSpec) -> np.ndarray | str:
    """Decode one JPEG, cut the margin and resize. Returns the array, or an error string."""
    try:
        data = Path(path).read_bytes()
        if not data:
            return f"{path}: is empty (0 bytes): the download was cut short"
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG":
                return f"{path}: is {img.format}, not a JPEG"
            if img.size != (spec.size_in, spec.size_in):
                return f"{path}: is {img.size[0]}x{img.size[1]}, expected {spec.size_in}x{spec.size_in}"
            if img.mode != "RGB":  # grey or CMYK JPEGs; LFW's are RGB, so no copy is made
                img = img.convert("RGB")
            box = (spec.crop, spec.crop, spec.size_in - spec.crop, spec.size_in - spec.crop)
            face = img.resize((spec.size, spec.size), RESAMPLE[spec.resample], box=box)
            return np.asarray(face, dtype=np.uint8)
    except Image.DecompressionBombError as err:  # a header claiming a giant image
        return f"{path}: refused, claims an enormous image ({err})"
    except UnidentifiedImageError:  # Pillow's message names its in-memory buffer, not the file
        return f"{path}: not an image file ({len(data)} bytes of something else)"
    except (OSError, SyntaxError, ValueError) as err:
        return f"{path}: unreadable ({err})"


def _load_chunk(job: tuple[list[str], CropSpec]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode a run of files into one array: one pickle per chunk, not per image, crosses
    back to the parent (which keeps the parent's per-image work, and so its CPU share, small)."""
    paths, spec = job
    out = np.zeros((len(paths), spec.size, spec.size, 3), dtype=np.uint8)
    errors = []
    for i, path in enumerate(paths):
        face = load_face(path, spec)
        if isinstance(face, str):
            errors.append((i, face))
        else:
            out[i] = face
    return out, errors


def decode_faces(
    paths: list[Path] | list[str],
    spec: CropSpec,
    workers: int = 0,
    bad_images: str = "fail",
    chunk: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode all faces on `workers` processes. Returns (images, ok mask)."""
    workers = workers or os.cpu_count() or 1
    names = [str(p) for p in paths]
    jobs = [(names[i : i + chunk], spec) for i in range(0, len(names), chunk)]
    images = np.zeros((len(paths), spec.size, spec.size, 3), dtype=np.uint8)
    ok = np.ones(len(paths), dtype=bool)
    errors: list[str] = []
    if workers > 1 and len(jobs) > 1:
        pool = multiprocessing.get_context("fork").Pool(workers)
        results = pool.imap(_load_chunk, jobs)
    else:
        pool, results = None, map(_load_chunk, jobs)
    try:
        with tqdm(total=len(paths), desc="prepare", unit="img") as bar:
            for start, (faces, failed) in zip(range(0, len(names), chunk), results, strict=True):
                images[start : start + len(faces)] = faces
                for i, message in failed:
                    ok[start + i] = False
                    errors.append(message)
                    if bad_images == "fail":
                        raise PrepareError(
                            f"bad image {message}; fix or remove it, or set data.prepare.bad_images=skip"
                        )
                bar.update(len(faces))
    finally:
        if pool is not None:
            pool.terminate()
    if errors:
        log.warning("skipped %d bad images, e.g.:\n  %s", len(errors), "\n  ".join(errors[:5]))
    return images, ok


# --------------------------------------------------------------------------- split


def person_disjoint_split(persons: np.ndarray, ratios: dict[str, float], seed: int) -> np.ndarray:
    """Assign whole identities to splits so each split gets about its share of the images.

    People are shuffled with `seed` (from sorted order, so the result does not depend on input order)
    and dealt to test, then val, until each reaches its image quota; everyone else trains.
    """
    total = sum(ratios[s] for s in SPLITS)
    if any(ratios[s] < 0 for s in SPLITS) or total <= 0:
        raise PrepareError(
            f"split ratios {dict(ratios)} must be non-negative and sum to more than 0"
        )
    counts = Counter(persons.tolist())
    people = sorted(counts)
    order = np.random.default_rng(seed).permutation(len(people))
    quotas = {s: ratios[s] / total * len(persons) for s in ("test", "val")}
    assignment: dict[str, str] = {}
    filled = {"test": 0, "val": 0}
    for idx in order:
        person = people[idx]
        target = next((s for s in ("test", "val") if filled[s] < quotas[s]), "train")
        assignment[person] = target
        if target != "train":
            filled[target] += counts[person]
    return np.asarray([assignment[p] for p in persons.tolist()])


# --------------------------------------------------------------------------- the stage


def prepare(cfg: DictConfig, raw_dir: Path, out_dir: Path, reports_dir: Path) -> dict:
    p = cfg.prepare
    if p.resample not in RESAMPLE:
        raise PrepareError(
            f"data.prepare.resample={p.resample!r} unknown; choose one of {sorted(RESAMPLE)}"
        )
    if p.bad_images not in ("fail", "skip"):
        raise PrepareError(f"data.prepare.bad_images={p.bad_images!r}: choose fail or skip")
    if not 0 <= 2 * p.crop < p.image_size_in or p.size <= 0:
        raise PrepareError(
            f"data.prepare.crop={p.crop}, size={p.size} do not fit {p.image_size_in}px images"
        )
    root = raw_dir / IMAGES_DIRNAME
    if not root.is_dir():
        raise PrepareError(f"{root} is missing: run the download stage first (dvc repro download)")
    keys = list_images(root)
    if not keys:
        raise PrepareError(f"{root} holds no LFW images")
    on_disk = set(keys)

    names: list[str] = []
    scores = np.zeros((len(keys), 0), dtype=np.float32)
    without_attributes = 0
    if cfg.attributes:
        attrs = parse_attributes(
            cfg.attributes_file, cfg.expected_attributes, cfg.expected_attribute_rows
        )
        missing = [k for k in attrs.keys if k not in on_disk]
        if missing:
            shown = ", ".join(f"{person} #{num}" for person, num in missing[:5])
            raise PrepareError(
                f"{cfg.attributes_file}: {len(missing)} rows have no image in {root} ({shown}); "
                "is the attributes file from the same LFW release?"
            )
        without_attributes = len(keys) - len(attrs.keys)
        keys, names, scores = attrs.keys, attrs.names, attrs.scores
        order = sorted(range(len(keys)), key=keys.__getitem__)
        keys = [keys[i] for i in order]
        scores = scores[order]
        log.info(
            "%d images have attribute rows, %d have none and are left out",
            len(keys),
            without_attributes,
        )

    spec = CropSpec(p.image_size_in, p.crop, p.size, p.resample)
    images, ok = decode_faces([image_path(root, k) for k in keys], spec, p.workers, p.bad_images)
    if not ok.any():
        raise PrepareError(
            f"every one of the {len(keys)} images in {root} is bad: nothing to prepare; "
            "check the download (rerun `dvc repro download`)"
        )
    persons = np.asarray([k[0] for k in keys])[ok]
    imagenums = np.asarray([k[1] for k in keys], dtype=np.int32)[ok]
    images, scores = images[ok], scores[ok]
    split = person_disjoint_split(persons, dict(p.split), p.split.seed)
    empty = [s for s in SPLITS if p.split[s] > 0 and not (split == s).any()]
    if empty:
        raise PrepareError(
            f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty: "
            f"{len(images)} faces of {len(set(persons.tolist()))} people cannot fill "
            f"data.prepare.split={dict(p.split)} person-disjointly; prepare more images "
            "(check the download and the attributes file) or change the split"
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "faces.npz", suffix=".npz") as tmp:
        np.savez(
            tmp,
            images=images,
            person=persons,
            imagenum=imagenums,
            attributes=scores,
            attribute_names=np.asarray(names, dtype=str),
            split=split,
            # carried into the file so every run can record where its faces came from
            source=np.asarray(
                recorded_source(raw_dir) or "unknown (no download.json: images placed by hand)"
            ),
        )
    grid_n = min(p.grid * p.grid, len(images))
    pick = np.random.default_rng(p.split.seed).choice(len(images), size=grid_n, replace=False)
    save_grid(images[np.sort(pick)], out_dir / "samples.png", rows=p.grid)

    counts = {
        "images": len(images),
        "people": len(set(persons.tolist())),
        "bad_images_skipped": int((~ok).sum()),
        "images_without_attributes": int(without_attributes),
        **{f"{s}_images": int((split == s).sum()) for s in SPLITS},
        **{f"{s}_people": len(set(persons[split == s].tolist())) for s in SPLITS},
    }
    write_text_atomic(reports_dir / "prepare.json", json.dumps(counts, indent=2) + "\n")
    log.info("prepared %s", counts)
    return counts


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_pipeline_error
def main(cfg: DictConfig) -> None:
    log.info("prepare config:\n%s", OmegaConf.to_yaml(cfg.data))
    path = hydra.utils.to_absolute_path
    prepare(
        cfg.data,
        Path(path(cfg.paths.raw)),
        Path(path(cfg.paths.prepared)),
        Path(path(cfg.paths.reports)),
    )


if __name__ == "__main__":
    main()
