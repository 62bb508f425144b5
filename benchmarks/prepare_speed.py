"""Prepare-stage speed: this project's parallel decode vs the notebook's serial loop, on real JPEGs.

    python benchmarks/prepare_speed.py --images data/raw/lfw-deepfunneled [--limit 13233] [--json out.json]

Both read the same files and produce the same 64x64 crops. The serial loop is the notebook's way
(open, crop the 80-px margin, resize, one image after another, float32 list); ours is
pipeline.prepare.decode_faces on every core. Prints a table and JSON. (`train_speed.py --raw` runs
this comparison too, and times the whole prepare stage.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.prepare import CropSpec, decode_faces


def notebook_serial(paths: list[Path]) -> np.ndarray:
    """The seed notebook's loop: PIL per image, crop, resize, append, stack as float32."""
    out = []
    for path in paths:
        img = Image.open(path).convert("RGB").crop((80, 80, 170, 170)).resize((64, 64))
        out.append(np.asarray(img, dtype=np.float32) / 255.0)
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--images", type=Path, required=True, help="the extracted lfw-deepfunneled folder"
    )
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    paths = sorted(args.images.rglob("*.jpg"))[: args.limit or None]
    for path in paths:  # warm the page cache so both variants read from memory
        path.read_bytes()

    t = time.perf_counter()
    serial = notebook_serial(paths)
    serial_s = time.perf_counter() - t
    t = time.perf_counter()
    ours, ok = decode_faces(paths, CropSpec(), workers=0)
    ours_s = time.perf_counter() - t
    assert ok.all() and ours.shape == (*serial.shape[:1], 64, 64, 3)
    result = {
        "images": len(paths),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "notebook_serial_s": round(serial_s, 2),
        "notebook_serial_img_per_s": round(len(paths) / serial_s),
        "ours_parallel_s": round(ours_s, 2),
        "ours_parallel_img_per_s": round(len(paths) / ours_s),
        "speedup": round(serial_s / ours_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(f"{'':26s}{'seconds':>10s}{'images/s':>10s}")
    print(f"{'notebook (serial loop)':26s}{serial_s:10.2f}{len(paths) / serial_s:10.0f}")
    print(
        f"{'ours (' + str(os.cpu_count()) + ' processes)':26s}{ours_s:10.2f}{len(paths) / ours_s:10.0f}"
    )
    print(f"speed-up: {serial_s / ours_s:.2f}x on {len(paths)} images")
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
