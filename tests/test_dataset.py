from pathlib import Path

import numpy as np
import pytest

from pipeline.dataset import batches, epoch_order, load_faces, training_batches
from pipeline.errors import PipelineError


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    np.testing.assert_array_equal(epoch_order(50, 1, 3), epoch_order(50, 1, 3))
    assert not np.array_equal(epoch_order(50, 1, 3), epoch_order(50, 1, 4))
    assert sorted(epoch_order(50, 1, 3)) == list(range(50))


def test_training_batches_cover_each_epoch_once_in_order(tiny_prepared: Path) -> None:
    images = load_faces(tiny_prepared).images[:20]
    batches_seen = [
        np.asarray(b) for b in training_batches(images, 8, seed=5, first_epoch=1, epochs=3)
    ]
    assert [len(b) for b in batches_seen] == [8, 8, 4, 8, 8, 4]  # batches never straddle epochs
    first_epoch = np.concatenate(batches_seen[:3])
    np.testing.assert_allclose(first_epoch, images[epoch_order(20, 5, 1)] / 255.0, rtol=1e-6)
    assert first_epoch.dtype == np.float32 and first_epoch.max() <= 1.0


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
