import numpy as np
import pytest

from pipeline import metrics


def test_frechet_distance_of_known_gaussians() -> None:
    mu = np.array([1.0, 2.0, -1.0])
    assert metrics.frechet_distance(mu, np.eye(3), mu, np.eye(3)) == pytest.approx(0.0, abs=1e-9)
    # equal covariances: only the means count
    assert metrics.frechet_distance(np.zeros(3), np.eye(3), mu, np.eye(3)) == pytest.approx(6.0)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    assert metrics.frechet_distance(
        np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)
    ) == pytest.approx(1 + 0 + 4)


def test_fid_from_samples_approaches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 4))
    b = rng.standard_normal((20000, 4)) * 2 + 1
    # closed form: |mu|^2 = 4, trace term per dim (1 - 2)^2 = 1 -> 4
    assert metrics.fid_from_features(a, b) == pytest.approx(8.0, rel=0.03)


def test_kid_is_zero_for_one_distribution_and_positive_for_two() -> None:
    rng = np.random.default_rng(1)
    same_a, same_b = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))
    mean, std = metrics.kid_from_features(same_a, same_b, subsets=10, subset_size=200)
    assert abs(mean) < 3 * std + 1e-3
    shifted = rng.standard_normal((400, 16)) + 1.0
    assert metrics.kid_from_features(same_a, shifted, subsets=10, subset_size=200)[0] > 0.1


def test_psnr_of_a_known_mse() -> None:
    x = np.zeros((2, 4, 4, 3))
    y = np.full((2, 4, 4, 3), 0.1)
    np.testing.assert_allclose(metrics.mse(x, y), [0.01, 0.01])
    np.testing.assert_allclose(metrics.psnr(x, y), [20.0, 20.0])


def test_ssim_matches_scikit_image() -> None:
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(2)
    x = rng.random((3, 24, 24, 3))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    ours = metrics.ssim(x, y)
    theirs = [
        structural_similarity(
            a,
            b,
            data_range=1.0,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=True,
        )
        for a, b in zip(x, y, strict=True)
    ]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    np.testing.assert_allclose(metrics.ssim(x, x), 1.0)


def test_active_units_count_varying_dimensions() -> None:
    rng = np.random.default_rng(3)
    z = np.zeros((500, 5))
    z[:, :3] = rng.standard_normal((500, 3))
    z[:, 3] = 0.01 * rng.standard_normal(500)  # variance 1e-4: collapsed
    assert metrics.active_units(z) == 3


def test_log_mean_exp_and_bits_per_dim() -> None:
    a = np.array([[-1000.0, 0.0], [-1000.0, np.log(3.0)]])
    np.testing.assert_allclose(metrics.log_mean_exp(a, axis=0), [-1000.0, np.log(2.0)])
    assert metrics.bits_per_dim(np.log(2) * 12, 12, scale_bits=0) == pytest.approx(1.0)
    assert metrics.bits_per_dim(0.0, 12) == pytest.approx(8.0)


@pytest.mark.skipif(
    metrics.fid_unavailable_reason() is not None, reason="the [fid] extra is not installed"
)
def test_fid_network_plumbing_on_real_faces() -> None:
    """The real FID Inception network: 2048-d features, deterministic, FID of a set with itself ~ 0."""
    from skimage.data import lfw_subset

    faces = (np.repeat(lfw_subset()[:24, ..., None], 3, axis=-1) * 255).astype(np.uint8)
    feats = metrics.inception_features(faces, batch_size=12)
    assert feats.shape == (24, 2048) and np.isfinite(feats).all() and feats.std() > 0
    np.testing.assert_allclose(
        metrics.inception_features(faces[:4]), feats[:4], rtol=1e-4, atol=1e-5
    )
    assert metrics.fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-3)
    noise = np.random.default_rng(0).integers(0, 255, faces.shape, dtype=np.uint8)
    assert metrics.fid_from_features(metrics.inception_features(noise), feats) > 50


def test_inception_features_of_real_faces_are_cached_per_content(tmp_path, monkeypatch) -> None:
    import numpy as np

    from pipeline import metrics

    calls = []

    def features(images, batch_size=50, desc=""):  # stands in for the 87 MB network
        calls.append(len(images))
        return np.tile(images.reshape(len(images), -1)[:, :1].astype(np.float64), (1, 2048))

    monkeypatch.setattr(metrics, "inception_features", features)
    faces = np.random.default_rng(0).integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    first = metrics.cached_inception_features(faces, tmp_path)
    again = metrics.cached_inception_features(faces.copy(), tmp_path)
    assert calls == [7] and np.array_equal(first, again)  # the second call read the cache
    other = faces.copy()
    other[0, 0, 0, 0] ^= 1  # one changed pixel is other data
    metrics.cached_inception_features(other, tmp_path)
    assert calls == [7, 7] and len(list(tmp_path.glob("*.npy"))) == 2
    for cached in tmp_path.glob("*.npy"):
        cached.write_bytes(b"truncated")  # a damaged cache is recomputed, not trusted
    assert np.array_equal(metrics.cached_inception_features(faces, tmp_path), first)
    assert calls == [7, 7, 7]
    metrics.cached_inception_features(faces, None)  # None: no cache
    assert calls == [7, 7, 7, 7] and not list(tmp_path.glob(".*"))  # no temp files left


def test_frechet_distance_agrees_with_the_matrix_square_root_of_the_product() -> None:
    """The symmetric form gives what scipy's sqrtm of Σ1Σ2 gives, on full covariances shaped like
    Inception features (more dimensions than a few, far from diagonal, one of them singular)."""
    from scipy import linalg

    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 64)) @ rng.standard_normal((64, 64))
    b = rng.standard_normal((40, 64)) @ rng.standard_normal((64, 64)) + 0.3  # rank 40 < 64
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mu1, mu2 = a.mean(0), b.mean(0)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * covmean)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    # symmetric in its two arguments, as a distance is
    assert metrics.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-6)


def _kid_per_subset(a, b, subsets, m, seed=0):
    """KID as Bińkowski et al. write it: the kernels of each pair of random subsets on their own."""
    rng = np.random.default_rng(seed)
    d, values = a.shape[1], []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        values.append(
            (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
        )
    return float(np.mean(values)), float(np.std(values))


def test_kid_from_whole_kernels_equals_kid_per_subset() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((90, 8)), rng.standard_normal((70, 8)) * 1.3 + 0.2
    expected = _kid_per_subset(a, b, subsets=7, m=40)
    assert metrics.kid_from_features(a, b, subsets=7, subset_size=40) == pytest.approx(expected)
    assert expected[0] > 0.01  # two different distributions: the comparison is not of zeros


def test_a_reference_set_gives_the_same_fid_and_kid_as_the_plain_functions() -> None:
    rng = np.random.default_rng(4)
    real = rng.standard_normal((120, 16)) @ rng.standard_normal((16, 16))
    ref = metrics.Reference(real)
    for shift in (0.0, 0.5):
        fake = rng.standard_normal((100, 16)) @ rng.standard_normal((16, 16)) + shift
        plain = metrics.frechet_distance(  # from the moments, Σ^½ computed afresh
            fake.mean(0), np.cov(fake, rowvar=False), real.mean(0), np.cov(real, rowvar=False)
        )
        assert ref.fid(fake) == pytest.approx(plain, rel=1e-9)
        assert ref.kid(fake, subsets=5, subset_size=60) == pytest.approx(
            metrics.kid_from_features(fake, real, subsets=5, subset_size=60)
        )
    assert len(ref) == 120


def test_fid_infinity_removes_the_bias_of_small_samples() -> None:
    """Two identical Gaussians: FID at n is pure small-sample bias (≈ k/n), so the extrapolation
    to n = ∞ lands near 0 while every finite-n figure is well above it."""
    rng = np.random.default_rng(5)
    d = 16
    real = rng.standard_normal((20000, d))  # the real side adds a bias of its own, kept small
    fake = rng.standard_normal((2000, d))
    fid_inf, by_n = metrics.fid_infinity(fake, metrics.Reference(real), [100, 200, 400, 800])
    assert sorted(by_n) == [100, 200, 400, 800]
    assert by_n[100] > by_n[800] > 0  # the bias shrinks with n
    assert abs(fid_inf) < 0.4 * by_n[800] and by_n[100] > 5 * abs(fid_inf)
    with pytest.raises(ValueError, match="at least two sample sizes"):
        metrics.fid_infinity(fake, metrics.Reference(real), [5000, 6000])  # both capped at 2000
