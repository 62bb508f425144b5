from __future__ import annotations

import keras
import numpy as np

from pipeline.fused_adam import FusedAdam


def run_steps(optimizer: keras.optimizers.Optimizer, steps: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    weights = [
        keras.Variable(rng.standard_normal(shape).astype("float32"))
        for shape in ((64, 32), (32,), ())
    ]
    for _ in range(steps):
        grads = [rng.standard_normal(w.shape).astype("float32") for w in weights]
        optimizer.apply(grads, weights)
    return [np.asarray(w) for w in weights]


def test_fused_adam_takes_the_same_steps_as_keras_adam() -> None:
    keras_adam = keras.optimizers.Adam(learning_rate=0.01)
    fused = FusedAdam(learning_rate=0.01)
    expected, got = run_steps(keras_adam), run_steps(fused)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    # and it moved the weights (a no-op update would fail the comparison above only by luck)
    start = run_steps(FusedAdam(learning_rate=0.01), steps=0)
    assert all(np.abs(g - s).max() > 1e-3 for g, s in zip(got, start, strict=True))


def small_model(optimizer: keras.optimizers.Optimizer) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def test_a_keras_adam_checkpoint_resumes_into_fused_adam(tmp_path) -> None:
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    trained = small_model(keras.optimizers.Adam())
    trained.fit(x, y, epochs=2, verbose=0)
    trained.save_weights(tmp_path / "ckpt.weights.h5")  # weights and the optimizer's m, v, step

    resumed = small_model(FusedAdam())
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(tmp_path / "ckpt.weights.h5")
    assert int(resumed.optimizer.iterations) == 2
    for a, b in zip(resumed.optimizer.variables, trained.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(resumed.optimizer))
    assert isinstance(restored, FusedAdam)
