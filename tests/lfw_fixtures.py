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
