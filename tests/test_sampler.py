from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from pipeline import sampler
from pipeline.errors import PipelineError


def two_blobs(n: int, seed: int) -> np.ndarray:
    """A known mixture in 4-d: weights 0.3/0.7, means ±3 on the first axis, different spreads."""
    rng = np.random.default_rng(seed)
    first = rng.random(n) < 0.3
    z = rng.standard_normal((n, 4)) * np.where(first[:, None], 0.5, 1.5)
    z[:, 0] += np.where(first, -3.0, 3.0)
    return z


def test_the_mixture_recovers_a_known_mixture() -> None:
    mixture, scores = sampler.fit_gmm(two_blobs(4000, 0), two_blobs(1000, 1), [1, 2], seed=0)
    assert len(mixture.weights) == 2 and scores[2] > scores[1]
    order = np.argsort(mixture.means[:, 0])
    np.testing.assert_allclose(mixture.weights[order], [0.3, 0.7], atol=0.03)
    np.testing.assert_allclose(mixture.means[order, 0], [-3.0, 3.0], atol=0.1)
    spreads = np.sqrt(np.diagonal(mixture.chol @ mixture.chol.transpose(0, 2, 1), axis1=1, axis2=2))
    np.testing.assert_allclose(spreads[order].mean(axis=1), [0.5, 1.5], rtol=0.1)
    # and its samples look like the data: the same share on each side, the same spread
    z = mixture.sample(20_000, seed=3)
    assert z.dtype == np.float32 and abs((z[:, 0] < 0).mean() - 0.3) < 0.02
    cold = mixture.sample(20_000, temperature=0.5, seed=3)
    assert cold[cold[:, 0] > 0, 1].std() == pytest.approx(0.75, rel=0.1)  # 0.5 × 1.5


def test_log_density_matches_scikit_learn() -> None:
    from sklearn.mixture import GaussianMixture

    z = two_blobs(2000, 4)
    sk = GaussianMixture(2, covariance_type="full", random_state=0).fit(z)
    ours = sampler.GaussianMixture(sk.weights_, sk.means_, np.linalg.cholesky(sk.covariances_))
    np.testing.assert_allclose(ours.log_density(z[:50]), sk.score_samples(z[:50]), rtol=1e-8)


def test_save_and_load_round_trip_without_pickle(tmp_path: Path) -> None:
    mixture, _ = sampler.fit_gmm(two_blobs(1000, 0), two_blobs(300, 1), [2], seed=0)
    loaded = sampler.load(mixture.save(tmp_path / "sampler.npz"))
    np.testing.assert_array_equal(loaded.means, mixture.means)
    np.testing.assert_array_equal(loaded.sample(10, seed=1), mixture.sample(10, seed=1))
    assert [p.name for p in tmp_path.iterdir()] == ["sampler.npz"]  # no temp file left


def test_a_pickled_or_foreign_file_is_refused(tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, kind=np.asarray("gmm"), weights=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(PipelineError, match="pickles are never loaded"):
        sampler.load(pickled)
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps({"weights": [1.0]}))
    with pytest.raises(PipelineError, match="not a saved latent sampler"):
        sampler.load(raw)
    np.savez(
        tmp_path / "shape.npz",
        kind="gmm",
        weights=np.ones(2),
        means=np.ones((3, 4)),
        chol=np.ones(2),
    )
    with pytest.raises(PipelineError, match="wrong kind or shape"):
        sampler.load(tmp_path / "shape.npz")


@pytest.mark.parametrize(
    ("name", "components", "message"),
    [
        ("vamp", None, "sampler='vamp' is unknown"),
        ("gmm", [0, 5], r"sampler.components=\[0, 5\] must be"),
        ("gmm", [], r"sampler.components=\[\] must be"),
        ("gmm", [True], "must be a list of positive integers"),
    ],
)
def test_bad_sampler_settings_are_one_clear_error(
    name: str, components: list | None, message: str, monkeypatch
) -> None:
    import sklearn.mixture

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be fitted")

    monkeypatch.setattr(sklearn.mixture, "GaussianMixture", never)
    with pytest.raises(PipelineError, match=message):
        if name == "gmm":
            sampler.fit_gmm(np.zeros((10, 2)), np.zeros((5, 2)), components)
        else:
            sampler.validate(name)


def test_prior_codes_are_the_plain_normal_draws() -> None:
    z = sampler.latents(None, 5, 3, 0.5, seed=7)
    expected = np.random.default_rng(7).standard_normal((5, 3)).astype(np.float32) * 0.5
    np.testing.assert_array_equal(z, expected)
