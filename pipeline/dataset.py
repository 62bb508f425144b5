"""Load the prepared file and feed it to Keras: the one seam where TensorFlow-only code lives.

Batches are drawn from a per-epoch permutation that depends only on (seed, epoch), so a run
resumed at epoch k sees exactly the batches an uninterrupted run would have seen. Images stay
uint8 in memory (4x smaller than float32) and become float32 in [0, 1] one batch at a time.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from pipeline.errors import PipelineError


@dataclass
class Faces:
    images: np.ndarray  # uint8 (N, H, W, 3)
    person: np.ndarray
    imagenum: np.ndarray
    attributes: np.ndarray  # float32 (N, A)
    attribute_names: list[str]
    split: np.ndarray

    def subset(self, split: str) -> Faces:
        keep = self.split == split
        return Faces(
            self.images[keep],
            self.person[keep],
            self.imagenum[keep],
            self.attributes[keep],
            self.attribute_names,
            self.split[keep],
        )

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


def load_faces(path: str | os.PathLike[str]) -> Faces:
    path = Path(path)
    if not path.exists():
        raise PipelineError(
            f"prepared data {path} is missing: run `dvc repro prepare` (or python -m pipeline.prepare)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return Faces(
                npz["images"],
                npz["person"],
                npz["imagenum"],
                npz["attributes"],
                [str(n) for n in npz["attribute_names"]],
                npz["split"],
            )
    except (KeyError, ValueError, OSError) as err:
        raise PipelineError(
            f"{path} is not a prepared faces file ({err}): rerun the prepare stage"
        ) from err


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of the prepared file: the data version tag of a run."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def to_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) * np.float32(1.0 / 255.0)


class _Batches(keras.utils.PyDataset):
    """Backend-neutral batches (JAX, torch): one epoch per pass, re-ordered at each epoch's end."""

    def __init__(
        self, images: np.ndarray, batch_size: int, seed: int | None, epoch: int = 0
    ) -> None:
        super().__init__()
        self.images, self.batch_size, self.seed, self.epoch = images, batch_size, seed, epoch
        self._reorder()

    def _reorder(self) -> None:
        n = len(self.images)
        self.order = np.arange(n) if self.seed is None else epoch_order(n, self.seed, self.epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, i: int) -> np.ndarray:
        return to_float(self.images[self.order[i * self.batch_size : (i + 1) * self.batch_size]])

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._reorder()


def training_batches(images: np.ndarray, batch_size: int, seed: int, first_epoch: int, epochs: int):
    """Shuffled float batches for epochs [first_epoch, epochs): tf.data on TensorFlow, else a PyDataset."""
    if keras.backend.backend() != "tensorflow":
        return _Batches(images, batch_size, seed, first_epoch)
    import tensorflow as tf

    orders = np.stack(
        [
            epoch_order(len(images), seed, e)
            for e in range(first_epoch, max(epochs, first_epoch + 1))
        ]
    )
    ds = tf.data.Dataset.from_tensor_slices(
        orders
    )  # one row per epoch, so batches never straddle epochs
    ds = ds.flat_map(lambda row: tf.data.Dataset.from_tensor_slices(row).batch(batch_size))
    return _gather(ds, images)


def batches(images: np.ndarray, batch_size: int):
    """Float batches in stored order (validation, evaluation)."""
    if keras.backend.backend() != "tensorflow":
        return _Batches(images, batch_size, None)
    import tensorflow as tf

    return _gather(
        tf.data.Dataset.from_tensor_slices(np.arange(len(images))).batch(batch_size), images
    )


def _gather(index_batches, images: np.ndarray):
    import tensorflow as tf

    pixels = tf.constant(
        images
    )  # uint8 held once by the input pipeline; batches are gathered from it
    ds = index_batches.map(
        lambda idx: tf.cast(tf.gather(pixels, idx), tf.float32) / 255.0,
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.prefetch(tf.data.AUTOTUNE)
