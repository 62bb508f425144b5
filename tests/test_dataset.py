from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from pipeline.dataset import TrainingInput, batches, epoch_flips, epoch_order, load_faces
from pipeline.errors import PipelineError


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    np.testing.assert_array_equal(epoch_order(50, 1, 3), epoch_order(50, 1, 3))
    assert not np.array_equal(epoch_order(50, 1, 3), epoch_order(50, 1, 4))
    assert sorted(epoch_order(50, 1, 3)) == list(range(50))


def test_training_input_gives_each_epoch_its_own_permutation(tiny_prepared: Path) -> None:
    images = load_faces(tiny_prepared).images[:20]
    feed = TrainingInput(images, 8, seed=5, epochs=3)
    for epoch in (1, 0, 2):  # any order: the epoch, not a position in a stream, picks the batches
        got = list(feed.epoch(epoch))
        assert [len(b) for b in got] == [8, 8, 4]
        np.testing.assert_allclose(
            np.concatenate(got), images[epoch_order(20, 5, epoch)] / 255.0, rtol=1e-6
        )
        assert got[0].dtype == np.float32 and got[0].max() <= 1.0


def test_hflip_mirrors_the_same_half_of_each_epoch_every_time(tiny_prepared: Path) -> None:
    images = load_faces(tiny_prepared).images[:20]
    feed = TrainingInput(images, 8, seed=5, epochs=2, hflip=True)
    for epoch in (1, 0, 1):
        got = np.concatenate(list(feed.epoch(epoch)))
        plain = images[epoch_order(20, 5, epoch)] / 255.0
        flips = epoch_flips(20, 5, epoch)
        assert 0 < flips.sum() < 20  # some faces mirrored, some not
        np.testing.assert_allclose(got[~flips], plain[~flips], rtol=1e-6)
        np.testing.assert_allclose(got[flips], plain[flips][:, :, ::-1], rtol=1e-6)
    assert not np.array_equal(epoch_flips(20, 5, 0), epoch_flips(20, 5, 1))
    off = np.concatenate(list(TrainingInput(images, 8, seed=5, epochs=1).epoch(0)))
    np.testing.assert_allclose(off, images[epoch_order(20, 5, 0)] / 255.0, rtol=1e-6)


class _Recorder(keras.Model):
    """Records, for each Keras epoch, which images its train steps consumed and in what order.

    Image i carries its index in its first two pixels' red values (i % 256, i // 256)."""

    def __init__(self, n: int, epochs: int) -> None:
        super().__init__()
        self.n = n
        self.epoch = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False)
        self.count = self.add_weight(
            shape=(epochs,), dtype="int32", initializer="zeros", trainable=False
        )
        # room for twice an epoch, so an epoch that consumed too much shows it
        self.seen = self.add_weight(
            shape=(epochs, 2 * n), dtype="int32", initializer="zeros", trainable=False
        )

    def train_step(self, data: object) -> dict:
        idx = ops.cast(ops.round(data[:, 0, 0, 0] * 255.0), "int32") + 256 * ops.cast(
            ops.round(data[:, 0, 1, 0] * 255.0), "int32"
        )
        k = ops.shape(idx)[0]
        start = ops.take(self.count.value, self.epoch.value)
        rows = ops.full((k,), self.epoch.value, dtype="int32")
        cols = start + ops.arange(k, dtype="int32")
        where = ops.stack([rows, ops.minimum(cols, 2 * self.n - 1)], axis=1)
        self.seen.assign(ops.scatter_update(self.seen, where, idx + 1))  # 0 = nothing seen
        self.count.assign(
            ops.scatter_update(
                self.count, ops.reshape(self.epoch.value, (1, 1)), ops.reshape(start + k, (1,))
            )
        )
        return {"images": start + k}  # (the step must return something)


@pytest.mark.parametrize("steps_per_execution", [1, 3, 8])
def test_fit_trains_each_epoch_on_exactly_its_own_batches(steps_per_execution: int) -> None:
    """37 images in batches of 4: 10 steps an epoch, not a multiple of the group size (3 or 8);
    a group must never eat the next epoch's batches, and the last epoch must not starve."""
    n, batch, seed, epochs = 37, 4, 3, 4
    images = np.zeros((n, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(n) % 256, np.arange(n) // 256

    class SetEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.model.epoch.assign(epoch)

    for first in (0, 2):  # a fresh run, and a run resumed at epoch 2
        model = _Recorder(n, epochs)
        model.compile(steps_per_execution=steps_per_execution)
        feed = TrainingInput(images, batch, seed, epochs)
        model.fit(
            feed.data,
            epochs=epochs,
            initial_epoch=first,
            callbacks=[feed.callback, SetEpoch()],
            verbose=0,
        )
        count, seen = np.asarray(model.count), np.asarray(model.seen)
        for epoch in range(first, epochs):
            assert count[epoch] == n, f"epoch {epoch} consumed {count[epoch]} images, not {n}"
            np.testing.assert_array_equal(seen[epoch, :n] - 1, epoch_order(n, seed, epoch))


def test_evaluation_batches_keep_stored_order(tiny_prepared: Path) -> None:
    images = load_faces(tiny_prepared).images[:10]
    got = np.concatenate([np.asarray(b) for b in batches(images, 4)])
    np.testing.assert_allclose(got * 255.0, images, atol=1e-3)


def test_missing_or_wrong_prepared_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="run `dvc repro prepare`"):
        load_faces(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(PipelineError, match="not a prepared faces file"):
        load_faces(tmp_path / "other.npz")


def test_splits_of_the_tiny_file(tiny_prepared: Path) -> None:
    faces = load_faces(tiny_prepared)
    assert len(faces.subset("train").images) + len(faces.subset("val").images) + len(
        faces.subset("test").images
    ) == len(faces.images)
    assert faces.image_size == 16
