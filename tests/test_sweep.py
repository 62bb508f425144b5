"""Sweeps through Hydra's Ray launcher on a local Ray instance, against a SQLite store and a real
`mlflow server`: each job one evaluated MLflow run under one parent, which gets the comparison."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipeline import tracking
from tests.conftest import TINY_MODEL, free_port
from tests.test_train import cli

pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the [ray] extra is not installed")


def ray_sweep(
    tmp_path: Path, tracking_args: list[str], address: str | None = None
) -> subprocess.CompletedProcess:
    from tests.lfw_fixtures import write_tiny_prepared

    write_tiny_prepared(tmp_path / "prepared" / "faces.npz")
    args = [
        "--multirun",
        "hydra/launcher=ray",
        "hydra.launcher.ray.remote.num_cpus=1",  # two jobs at once on the 2-core CI machine
        # a small object store: CI containers have little /dev/shm (the plugin's own default)
        "hydra.launcher.ray.init.object_store_memory=78643200",
        *TINY_MODEL,
        "train.epochs=2",
        "model.latent_dim=2,4",
        *tracking_args,
        f"paths.prepared={tmp_path}/prepared",
        f"paths.reports={tmp_path}/reports",
        f"hydra.sweep.dir={tmp_path}/sweep",
        "evaluate.fid=false",  # FID in sweeps is the same code as evaluate's, tested there
        "evaluate.importance_samples=2",
        "evaluate.attributes=[Top]",
    ]
    # a local Ray instance of its own, whatever cluster this machine may belong to, or the
    # cluster at `address` (the plugin's own 75 MB object store would be refused there)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if address:
        args = [a for a in args if "object_store_memory" not in a]
        args.append(f"hydra.launcher.ray.init.address={address}")
    return cli(args, tmp_path, env)


def check_sweep(proc: subprocess.CompletedProcess, tmp_path: Path, uri: str) -> None:
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Ray Launcher is launching 2 jobs" in proc.stderr + proc.stdout
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("lfw-vae")
    assert experiment.tags[tracking.EXPERIMENT_KIND] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.data.params["model.latent_dim"] for r in children} == {"2", "4"}
    for run in children:
        assert run.info.status == "FINISHED"
        # every job evaluated itself on the test split (evaluate.after_training=auto in sweeps)
        for metric in ("test_mse", "test_psnr", "test_neg_elbo_nats", "test_active_units"):
            assert metric in run.data.metrics, (run.info.run_name, metric)
        assert tracking.image_steps(run.info.run_id) == {
            "samples": [2],
            "samples_prior": [2],
            "reconstructions": [2],
        }
        assert any(a.path == "evaluation" for a in client.list_artifacts(run.info.run_id))
    # each job's models in its own folder of the sweep
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "models" / "decoder.keras").is_file()
    # the parent ends when its last job has: its duration is the sweep's
    assert parent.info.status == "FINISHED"
    assert parent.info.end_time >= max(r.info.end_time for r in children)
    # the parent run got the comparison of its jobs
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert "comparison/runs.csv" in names and any(n.endswith(".png") for n in names)
    table = client.download_artifacts(parent.info.run_id, "comparison/runs.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(table).read_text())))
    assert {r["run_id"] for r in rows} == {r.info.run_id for r in children}
    assert all(r["test_mse"] for r in rows)


def test_ray_sweep_on_a_local_ray_instance(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    proc = ray_sweep(
        tmp_path, [f"tracking.tracking_uri={uri}", f"tracking.artifact_location={tmp_path}/art"]
    )
    check_sweep(proc, tmp_path, uri)


CLUSTER = """
import sys
from ray.cluster_utils import Cluster

node = {"num_cpus": 1, "object_store_memory": 78643200, "include_dashboard": False}
cluster = Cluster(initialize_head=True, head_node_args=node)
cluster.add_node(**node)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes it
cluster.shutdown()
"""


def test_ray_sweep_across_two_nodes_against_a_tracking_server(tmp_path: Path) -> None:
    """The README's cluster recipe on one machine: a Ray head and a second Ray node (separate
    raylet processes, one CPU each), the jobs sent there, runs and artifacts through a real
    `mlflow server`."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server/mlflow.db",
            "--artifacts-destination",
            str(tmp_path / "server" / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start within 60 s")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        cluster = subprocess.Popen(
            [sys.executable, "-c", CLUSTER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            address = cluster.stdout.readline().strip()
            assert address, "the Ray cluster did not start"
            proc = ray_sweep(tmp_path, [f"tracking.tracking_uri={uri}"], address)
        finally:
            cluster.stdin.close()
            cluster.wait(timeout=120)
        check_sweep(proc, tmp_path, uri)
        # one CPU per node and one per job: the two jobs ran on the two nodes
        runs = MlflowClient().search_runs(
            [MlflowClient().get_experiment_by_name("lfw-vae").experiment_id],
            "tags.ray_node != ''",
        )
        assert len({r.data.tags["ray_node"] for r in runs}) == 2
        # the artifacts went through the server, not to a local folder of the jobs
        assert any((tmp_path / "server" / "artifacts").rglob("runs.csv"))
    finally:
        server.terminate()
        server.wait(timeout=30)
