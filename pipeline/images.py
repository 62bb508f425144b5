"""Image grids and PNG files: the pictures people look at instead of reading numbers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.atomic import atomic_path


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float images in [0, 1] (or uint8 already) → uint8 in [0, 255]."""
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, rows: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile N×H×W×C images into one picture with `pad` white pixels between them."""
    images = to_uint8(images)
    n, h, w, c = images.shape
    rows = rows or int(np.ceil(np.sqrt(n)))
    cols = int(np.ceil(n / rows))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = image
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike[str], scale: int = 1) -> Path:
    """Write an H×W×C uint8/float image as PNG (atomically), optionally enlarged `scale`× for viewing."""
    picture = Image.fromarray(
        to_uint8(image).squeeze() if image.shape[-1] == 1 else to_uint8(image)
    )
    if scale > 1:
        picture = picture.resize(
            (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
        )
    with atomic_path(path, suffix=".png") as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)


def save_grid(
    images: np.ndarray, path: str | os.PathLike[str], rows: int | None = None, scale: int = 2
) -> Path:
    return save_png(make_grid(images, rows=rows), path, scale=scale)


def save_labelled_rows(
    blocks: list[tuple[str, np.ndarray]],
    path: str | os.PathLike[str],
    rows_per_block: int,
    header: list[str] | None = None,
    scale: int = 2,
) -> Path:
    """Blocks of faces, each a grid of `rows_per_block` rows with its label on the left (e.g. one
    block per attribute, one row per face); `header` labels the columns (e.g. edit strengths)."""
    font = ImageFont.load_default(size=14)
    pictures = []
    for _, images in blocks:
        grid = Image.fromarray(make_grid(images, rows=rows_per_block))
        pictures.append(grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST))
    label_w, gap = 130, 8
    header_h = 22 if header else 0
    width = label_w + max(p.width for p in pictures)
    height = header_h + sum(p.height for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if header:
        cell = pictures[0].width / len(header)
        for i, text in enumerate(header):
            draw.text((label_w + cell * (i + 0.5), 4), text, fill="black", font=font, anchor="ma")
    y = header_h
    for (label, _), picture in zip(blocks, pictures, strict=True):
        canvas.paste(picture, (label_w, y))
        draw.text((6, y + picture.height // 2), label, fill="black", font=font, anchor="lm")
        y += picture.height + gap
    with atomic_path(path, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
