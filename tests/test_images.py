from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.images import make_grid, save_grid, to_uint8


def test_grid_places_each_image_in_reading_order() -> None:
    images = np.stack([np.full((4, 4, 3), i * 40, np.uint8) for i in range(6)])
    grid = make_grid(images, rows=2, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert (
        grid[1, 1, 0] == 0
        and grid[1, 6, 0] == 40
        and grid[6, 1, 0] == 120
        and grid[6, 11, 0] == 200
    )
    assert grid[0, 0, 0] == 255  # padding is white


def test_float_images_are_scaled_and_clipped() -> None:
    np.testing.assert_array_equal(
        to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0])), [0, 0, 128, 255, 255]
    )


def test_save_grid_writes_a_png(tmp_path: Path) -> None:
    path = save_grid(np.zeros((4, 8, 8, 3), np.float32), tmp_path / "g.png", scale=2)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == ((2 * 10 + 2) * 2, (2 * 10 + 2) * 2)


def test_labelled_rows_keep_each_block_under_its_label(tmp_path: Path) -> None:
    from pipeline.images import save_labelled_rows

    red = np.zeros((6, 8, 8, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((6, 8, 8, 3), np.uint8)
    blue[..., 2] = 255
    path = save_labelled_rows(
        [("Smiling", red), ("Eyeglasses", blue)],
        tmp_path / "edits.png",
        2,
        header=["-1", "0", "+1"],
    )
    picture = np.asarray(Image.open(path).convert("RGB"))
    grid_w = 2 * make_grid(red, rows=2).shape[1]
    assert picture.shape[1] == 130 + grid_w  # a label column left of the faces
    label = picture[:, :130]
    assert (label < 128).any()  # text was drawn
    assert not (label[..., 0] > 200)[label[..., 1] < 50].any()  # no faces in the label column
    faces = picture[:, 130:]
    reds = np.where((faces[..., 0] == 255) & (faces[..., 2] == 0))[0]
    blues = np.where((faces[..., 2] == 255) & (faces[..., 0] == 0))[0]
    assert reds.max() < blues.min()  # the first block above the second
