from __future__ import annotations

import numpy as np

from pipeline.latent import attribute_direction


def test_attribute_direction_points_along_the_attribute() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 8))
    scores = 3 * z[:, 2] + 0.3 * rng.standard_normal(2000)  # the attribute lives in latent dim 2
    direction = attribute_direction(z, scores)
    assert np.argmax(np.abs(direction)) == 2 and direction[2] > 2
    assert np.abs(np.delete(direction, 2)).max() < 0.3


def test_interpolation_starts_and_ends_at_the_two_codes() -> None:
    import keras

    from pipeline.latent import interpolation_grid, sample_faces

    z = keras.Input((3,))
    decoder = keras.Model(z, keras.layers.Reshape((1, 1, 3))(z))  # identity "decoder"
    a, b = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    grid = interpolation_grid(decoder, a, b, steps=5).reshape(2, 5, 3)
    np.testing.assert_allclose(grid[:, 0], a)
    np.testing.assert_allclose(grid[:, -1], b)
    np.testing.assert_allclose(grid[:, 2], 0.5)
    cold = sample_faces(decoder, 500, 3, temperature=0.5, seed=1).reshape(500, 3)
    assert 0.4 < cold.std() < 0.6  # temperature scales the prior's spread


def test_distinct_people_picks_different_people_spread_over_the_split() -> None:
    from pipeline.latent import distinct_people

    # LFW order: runs of one person's photos (a dozen George_W_Bush first, say)
    person = np.array(["Bush"] * 12 + ["Ann", "Ann", "Bo", "Cy", "Cy", "Di", "Ed"])
    picks = distinct_people(person, 4)
    assert len(picks) == 4 and len(set(person[picks])) == 4
    assert person[picks[0]] == "Bush" and person[picks[-1]] == "Ed"  # first and last person
    # fewer people than asked: one face each, no repeats
    assert sorted(person[distinct_people(person[:14], 4)]) == ["Ann", "Bush"]
