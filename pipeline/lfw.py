"""The LFW deep-funneled dataset's own facts: its folder, its file names, how to list its images.

Used by download (to verify an extracted archive) and prepare (to read it) alike.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

IMAGES_DIRNAME = "lfw-deepfunneled"  # the folder inside every archive (and in data/raw/)
IMAGE_NAME = re.compile(r"^(?P<person>[^/]+)/(?P=person)_(?P<num>\d{4})\.jpg$")


def list_images(root: Path) -> list[tuple[str, int]]:
    """(person, imagenum) of every JPEG under root, sorted."""
    keys = []
    # os.scandir, not Path.rglob: one level of person folders, ~10x faster on 13k files
    with os.scandir(root) as people:
        for person in people:
            if not person.is_dir():
                continue
            with os.scandir(person.path) as files:
                for file in files:
                    match = IMAGE_NAME.match(f"{person.name}/{file.name}")
                    if match:
                        keys.append((match["person"], int(match["num"])))
    return sorted(keys)


def image_path(root: Path | str, key: tuple[str, int]) -> str:
    return f"{root}{os.sep}{key[0]}{os.sep}{key[0]}_{key[1]:04d}.jpg"


def recorded_source(raw_dir: Path) -> str | None:
    """The source the download stage got the images from, as its download.json records it;
    None where there is no readable record (images placed by hand)."""
    try:
        return str(json.loads((raw_dir / "download.json").read_text())["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
