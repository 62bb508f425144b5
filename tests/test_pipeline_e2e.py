"""The real `dvc repro` in a temporary git repo, data served from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.dvc_project import make_project, run
from tests.http_server import Route

pytestmark = pytest.mark.e2e


def data_overrides(server_url: str, n_images: int) -> list[str]:
    return [
        f"data.download.sources=[{server_url}/lfw-deepfunneled.tgz]",
        f"data.download.expected_images={n_images}",
        "data.download.content_sha256=null",
        "data.download.backoff_s=0.01",
        "data.expected_attributes=3",
        f"data.expected_attribute_rows={n_images}",
        "data.prepare.split.train=0.6",
        "data.prepare.split.val=0.2",
        "data.prepare.split.test=0.2",
        "data.prepare.grid=4",
    ]


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def test_dvc_repro_downloads_and_prepares(tmp_path: Path, lfw_source: dict, http_server) -> None:
    http_server.routes["/lfw-deepfunneled.tgz"] = archive = Route(
        lfw_source["archive"].read_bytes()
    )
    http_server.routes["/lfw_attributes.txt"] = Route(
        lfw_source["attributes"].read_bytes(), content_type="text/plain"
    )
    n = len(lfw_source["keys"])
    project = make_project(
        tmp_path / "proj",
        data_overrides(http_server.url, n),
        f"{http_server.url}/lfw_attributes.txt",
    )

    first = run(["dvc", "repro"], project)
    assert stages_run(first.stdout) == ["download", "prepare"]
    with np.load(project / "data/prepared/faces.npz") as npz:
        images, split, person = npz["images"], npz["split"], npz["person"]
    assert images.shape == (n, 64, 64, 3) and images.dtype == np.uint8
    groups = [set(person[split == s].tolist()) for s in ("train", "val", "test")]
    assert all(groups) and not (
        groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2]
    )
    assert json.loads((project / "reports/prepare.json").read_text())["images"] == n
    assert (project / "data/raw/lfw_attributes.txt").read_bytes() == lfw_source[
        "attributes"
    ].read_bytes()
    assert len(archive.requests) == 1

    second = run(["dvc", "repro"], project)
    assert stages_run(second.stdout) == []
    assert "Data and pipelines are up to date" in second.stdout
    assert len(archive.requests) == 1

    # a prepare knob re-runs prepare only; a model knob re-runs neither
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["prepare"]["crop"] = 70
    params["model"]["latent_dim"] = 7
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    third = run(["dvc", "repro", "prepare"], project)
    assert stages_run(third.stdout) == ["prepare"]
    assert len(archive.requests) == 1
