"""Small LFW-shaped data for tests: per-person folders of 250x250 JPEGs and a real-format attributes file."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MARGIN_COLOUR = (0, 200, 0)  # drawn only in the 80-px margin, so a correct crop never shows it

# 12 people, 30 images: enough for person-disjoint train/val/test splits
PEOPLE = {f"Person_{chr(65 + i)}{'x' * (i % 3)}": 1 + (i % 4) for i in range(12)}
ATTRIBUTE_NAMES = ["Male", "Asian", "Smiling"]


def face_jpeg(seed: int, size: int = 250) -> bytes:
    """A face-like drawing: skin ellipse, two eyes, a mouth; green margin; varies with seed."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), MARGIN_COLOUR)
    draw = ImageDraw.Draw(img)
    draw.rectangle(
        [80, 80, size - 81, size - 81], fill=tuple(int(v) for v in rng.integers(20, 80, 3))
    )
    skin = tuple(int(v) for v in rng.integers(150, 240, 3))
    draw.ellipse([88, 84, 162, 166], fill=skin)
    eye_y = 110 + int(rng.integers(-4, 5))
    draw.ellipse([100, eye_y, 112, eye_y + 8], fill=(30, 30, 30))
    draw.ellipse([138, eye_y, 150, eye_y + 8], fill=(30, 30, 30))
    mouth = 145 + int(rng.integers(-3, 4))
    draw.rectangle([110, mouth, 140, mouth + 4 + int(rng.integers(0, 6))], fill=(150, 40, 40))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def make_lfw_tree(root: Path, people: dict[str, int] = PEOPLE) -> list[tuple[str, int]]:
    """Write root/<Person>/<Person>_NNNN.jpg; return the (person, imagenum) keys."""
    keys = []
    for p_idx, (person, n) in enumerate(sorted(people.items())):
        (root / person).mkdir(parents=True, exist_ok=True)
        for num in range(1, n + 1):
            (root / person / f"{person}_{num:04d}.jpg").write_bytes(face_jpeg(p_idx * 100 + num))
            keys.append((person, num))
    return keys


def make_archive(tree_parent: Path, archive: Path, arcroot: str = "lfw-deepfunneled") -> Path:
    """tar.gz the folder tree_parent/arcroot the way the official archive is laid out."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree_parent / arcroot, arcname=arcroot)
    return archive


def attributes_text(
    keys: list[tuple[str, int]], names: list[str] = ATTRIBUTE_NAMES, seed: int = 0
) -> str:
    """lfw_attributes.txt format: comment, '#'-shifted tab header, rows with spaces in names."""
    rng = np.random.default_rng(seed)
    lines = [
        "# Attribute values for LFW (test fixture)",
        "\t".join(["#", "person", "imagenum", *names]),
    ]
    for person, num in keys:
        scores = "\t".join(f"{v:.5f}" for v in rng.normal(size=len(names)))
        lines.append(f"{person.replace('_', ' ')}\t{num}\t{scores}")
    return "\n".join(lines) + "\n"


TINY_SOURCE = "synthetic blobs (tests/lfw_fixtures.py)"


def write_tiny_prepared(path: Path, n: int = 96, size: int = 16, seed: int = 0) -> Path:
    """A prepared-format file of smooth blob images (learnable in a few epochs), 3 persons per split."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    centres = rng.uniform(0.25, 0.75, (n, 2))
    colours = rng.uniform(0.2, 1.0, (n, 3))
    blob = np.exp(
        -((yy[None] - centres[:, :1, None]) ** 2 + (xx[None] - centres[:, 1:, None]) ** 2) / 0.03
    )
    images = np.clip(blob[..., None] * colours[:, None, None, :] * 255, 0, 255).astype(np.uint8)
    person = np.asarray([f"P{i % 12}" for i in range(n)])  # 1/6 test, 1/6 val, 2/3 train
    split = np.where(
        np.isin(person, ["P0", "P1"]),
        "test",
        np.where(np.isin(person, ["P2", "P3"]), "val", "train"),
    )
    attributes = np.stack([centres[:, 0], colours[:, 0]], 1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        images=images,
        person=person,
        imagenum=np.arange(n, dtype=np.int32),
        attributes=attributes,
        attribute_names=np.asarray(["Top", "Red"]),
        split=split,
        source=np.asarray(TINY_SOURCE),
    )
    return path
