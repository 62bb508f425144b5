"""Load the prepared file and feed it to Keras (tf.data on TensorFlow, a PyDataset elsewhere).

Batches are drawn from a per-epoch permutation that depends only on (seed, epoch), and each epoch
consumes exactly its own batches, so a run resumed at epoch k sees exactly the batches an
uninterrupted run would have seen. Images stay
uint8 in memory (4x smaller than float32) and become float32 in [0, 1] one batch at a time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    source: str | None = None  # where the download stage got the images (None: an older file)

    def subset(self, split: str) -> Faces:
        keep = self.split == split
        return Faces(
            self.images[keep],
            self.person[keep],
            self.imagenum[keep],
            self.attributes[keep],
            self.attribute_names,
            self.split[keep],
            self.source,
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
                str(npz["source"]) if "source" in npz.files else None,
            )
    except (KeyError, ValueError, OSError) as err:
        raise PipelineError(
            f"{path} is not a prepared faces file ({err}): rerun the prepare stage"
        ) from err


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_flips(n: int, seed: int, epoch: int) -> np.ndarray:
    """Which positions of an epoch's order are mirrored left-right: a function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 1]).random(n) < 0.5


def to_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) * np.float32(1.0 / 255.0)


class _Batches(keras.utils.PyDataset):
    """Backend-neutral batches (JAX, torch): one epoch per pass, in the order of `self.epoch`."""

    def __init__(
        self,
        images: np.ndarray,
        batch_size: int,
        seed: int | None,
        epoch: int = 0,
        hflip: bool = False,
    ) -> None:
        super().__init__()
        self.images, self.batch_size, self.seed, self.hflip = images, batch_size, seed, hflip
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        n = len(self.images)
        self.order = np.arange(n) if self.seed is None else epoch_order(n, self.seed, epoch)
        self.flips = (
            epoch_flips(n, self.seed, epoch)
            if self.hflip and self.seed is not None
            else np.zeros(n, bool)
        )

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, i: int) -> np.ndarray:
        part = slice(i * self.batch_size, (i + 1) * self.batch_size)
        x = to_float(self.images[self.order[part]])
        flip = self.flips[part]
        x[flip] = x[flip][:, :, ::-1]
        return x


class TrainingInput:
    """Shuffled float batches, one finite epoch per pass, the order set at each epoch's start.

    Why finite epochs: with `steps_per_execution > 1`, Keras runs a whole group of steps per call.
    On one endless stream an epoch whose step count is not a multiple of the group would eat the
    next epoch's first batches (and the last epoch would starve). On a finite epoch the compiled
    loop stops at the end of the data, so a last partial group runs only the steps that are left.

    Pass `data` to `fit` (no `steps_per_epoch`) and `callback` among its callbacks: the callback
    tells the input which epoch begins, so epoch e is always `epoch_order(n, seed, e)`, also after a
    resume. On TensorFlow the order is a row of a precomputed table picked by an epoch variable.
    `hflip` mirrors half of each epoch's faces left-right (which half: `epoch_flips`), so the model
    sees twice as many distinct faces; faces are near-symmetric, so a mirrored face is a real one.
    """

    def __init__(
        self, images: np.ndarray, batch_size: int, seed: int, epochs: int, hflip: bool = False
    ) -> None:
        self.steps = math.ceil(len(images) / batch_size)
        if keras.backend.backend() != "tensorflow":
            self._batches = _Batches(images, batch_size, seed, hflip=hflip)
            self.data = self._batches
            self._set = self._batches.set_epoch
        else:
            import tensorflow as tf

            n, epochs = len(images), max(epochs, 1)
            orders = np.stack([epoch_order(n, seed, e) for e in range(epochs)])
            flips = np.stack(
                [epoch_flips(n, seed, e) if hflip else np.zeros(n, bool) for e in range(epochs)]
            )
            table, flip_table = tf.constant(orders.astype(np.int32)), tf.constant(flips)
            epoch = tf.Variable(0, trainable=False, dtype=tf.int32)
            # read when each epoch's iterator starts, i.e. after on_epoch_begin has set it
            order = tf.data.Dataset.range(1).flat_map(
                lambda _: tf.data.Dataset.from_tensor_slices(
                    (tf.gather(table, epoch), tf.gather(flip_table, epoch))
                )
            )
            index_batches = order.batch(batch_size).apply(
                tf.data.experimental.assert_cardinality(self.steps)
            )
            self.data = _gather(index_batches, images)
            self._set = epoch.assign
        self.callback = _SetEpoch(self._set)

    def epoch(self, epoch: int) -> Iterator[np.ndarray]:
        """The batches of one epoch, as training sees them (for tests and tools)."""
        self._set(epoch)
        if isinstance(self.data, keras.utils.PyDataset):
            return (self.data[i] for i in range(len(self.data)))
        return (np.asarray(b) for b in self.data)


class _SetEpoch(keras.callbacks.Callback):
    def __init__(self, set_epoch: Callable[[int], Any]) -> None:
        super().__init__()
        self.set_epoch = set_epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.set_epoch(epoch)


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

    # uint8 held once by the input pipeline; batches are gathered from it
    pixels = tf.constant(images)

    def load(idx, flip=None):
        x = tf.cast(tf.gather(pixels, idx), tf.float32) / 255.0
        if flip is None:
            return x
        return tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)

    ds = index_batches.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
