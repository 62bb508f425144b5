from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from pipeline import generator, tracking
from pipeline.artifacts import load_local
from pipeline.images import to_uint8
from tests.conftest import free_port, run_stage, tiny_overrides

CHAMPION = "models:/lfw-vae@champion"
SERVE_ARGS = ["--env-manager", "local", "-w", "1", "-h", "127.0.0.1", "-p"]


def test_each_run_registers_one_generator_with_its_sampler(trained_tiny: dict) -> None:
    tracking.setup(trained_tiny["cfg"].tracking)
    gen = generator.load(CHAMPION, trained_tiny["cfg"].tracking)
    local = load_local(trained_tiny["root"] / "models")
    # the mixture, not the prior: the same faces the local decoder + sampler.npz draw
    assert gen.sampler_name == "gmm"
    np.testing.assert_allclose(gen.mixture.means, local.mixture.means)
    from pipeline.latent import sample_faces

    expected = sample_faces(local.decoder, 4, 4, 1.0, 3, mixture=local.mixture)
    np.testing.assert_allclose(gen.faces(4, 1.0, 3), expected, atol=1e-5)

    client = mlflow.MlflowClient()
    assert "ex-post latent sampler" in client.get_registered_model("lfw-vae").description
    run = mlflow.get_run(trained_tiny["run_id"])
    logged = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{trained_tiny['run_id']}'",
        output_format="list",
    )
    # one logged model per run: the generator, which also holds the encoder
    assert [m.name for m in logged] == ["generator"]
    x = np.random.default_rng(0).random((2, 16, 16, 3), np.float32)
    np.testing.assert_allclose(
        gen.encoder.predict(x, verbose=0)[0], local.encoder.predict(x, verbose=0)[0], atol=1e-6
    )
    reqs = Path(
        mlflow.artifacts.download_artifacts(f"runs:/{trained_tiny['run_id']}/generator")
    ).joinpath("requirements.txt")
    assert any(line.startswith("keras==") for line in reqs.read_text().splitlines())


def test_generator_requests_and_their_errors(trained_tiny: dict) -> None:
    tracking.setup(trained_tiny["cfg"].tracking)
    model = mlflow.pyfunc.load_model(CHAMPION)  # through the pyfunc interface a server uses
    gen = model.unwrap_python_model()
    faces = model.predict(pd.DataFrame([{"n": 2, "seed": 0}, {"n": 3, "temperature": 0.5}]))
    assert faces.shape == (5, 16, 16, 3) and faces.dtype == np.uint8
    np.testing.assert_array_equal(faces[:2], to_uint8(gen.faces(2, 1.0, 0)))
    np.testing.assert_array_equal(faces[2:], to_uint8(gen.faces(3, 0.5, 0)))
    for row, message in [
        ({"n": 0}, "n=0 must be a whole number from 1"),
        ({"n": 100000}, "from 1 to 4096"),
        ({"n": 2, "temperature": -1.0}, "temperature=-1.0 must be a positive number"),
        ({"n": 2, "seed": -3}, "seed=-3 must be a non-negative"),
    ]:
        with pytest.raises(MlflowException, match=message):
            gen.predict(None, pd.DataFrame([row]))


def test_champion_follows_the_best_validation_fid(trained_tiny: dict, tmp_path: Path) -> None:
    """Two registered versions in a fresh store: the first becomes champion, then whichever has
    the lower val_fid; a worse figure never takes the alias."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.create_experiment("g", artifact_location=str(tmp_path / "art"))
    models = trained_tiny["root"] / "models"
    runs = []
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment) as run:
            generator.log_generator(models, 16, "faces")
            runs.append(run.info.run_id)
    client = mlflow.MlflowClient()

    def champion() -> str:
        return str(client.get_model_version_by_alias("faces", "champion").version)

    assert generator.promote("faces", runs[0], None) == "1" and champion() == "1"
    assert generator.promote("faces", runs[1], 9.0) == "2" and champion() == "2"  # 1 had none
    generator.promote("faces", runs[0], 12.0)
    assert champion() == "2"  # worse: stays
    generator.promote("faces", runs[0], 4.0)
    assert champion() == "1"
    assert client.get_model_version("faces", "1").tags["val_fid"] == "4.0000"


def test_evaluation_figures_go_into_the_run_and_its_generator_unchanged(
    trained_tiny: dict, tmp_path: Path
) -> None:
    from omegaconf import OmegaConf

    from pipeline.dataset import load_faces
    from pipeline.evaluation import evaluate_into_run

    cfg = OmegaConf.merge(trained_tiny["cfg"], {"evaluate": {"fid": False}})
    tracking.setup(cfg.tracking)
    vae = load_local(trained_tiny["root"] / "models")
    before = mlflow.get_run(trained_tiny["run_id"]).info
    result = evaluate_into_run(cfg, vae, load_faces(trained_tiny["prepared"]))
    after = mlflow.get_run(trained_tiny["run_id"])
    # evaluated into the run without reopening it: the training's status and duration stand
    assert (after.info.status, after.info.end_time) == (before.status, before.end_time)
    assert after.data.metrics["test_psnr"] == pytest.approx(result["psnr"])
    model = mlflow.get_logged_model(generator.logged_model_id(trained_tiny["run_id"]))
    linked = {m.key: m for m in model.metrics or []}
    assert linked["test_psnr"].value == pytest.approx(result["psnr"])
    assert linked["test_psnr"].dataset_name == "faces.npz (test split)"  # what it was measured on
    assert mlflow.MlflowClient().get_model_version_by_alias("lfw-vae", "champion")


def test_generate_command_reads_a_registered_generator(trained_tiny: dict, tmp_path: Path) -> None:
    args = [
        *tiny_overrides(trained_tiny["root"]),
        f"generate.model={CHAMPION}",
        f"generate.out={tmp_path}/out",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    proc = run_stage("pipeline.generate", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out/grid.png").stat().st_size > 100
    assert "prior" not in proc.stderr.lower()  # it found the sampler: no fallback message
    missing = run_stage(
        "pipeline.generate", [*args[:-3], "generate.model=models:/nope@x"], tmp_path
    )
    assert missing.returncode == 1 and "could not load models:/nope@x" in missing.stderr
    assert "Traceback" not in missing.stderr


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_mlflow_models_serve_answers_with_mixture_faces(trained_tiny: dict, tmp_path: Path) -> None:
    """The real `mlflow models serve` on 127.0.0.1 with the registered champion."""
    uri = trained_tiny["cfg"].tracking.tracking_uri
    tracking.setup(trained_tiny["cfg"].tracking)
    expected = to_uint8(generator.load(CHAMPION, trained_tiny["cfg"].tracking).faces(3, 1.0, 7))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION, *SERVE_ARGS, str(port)],
        # the server execs uvicorn from PATH, as in an activated virtual environment
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        stdout=open(tmp_path / "serve.log", "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        deadline = time.time() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                assert time.time() < deadline, "server did not start"
                time.sleep(1)
        url = f"http://127.0.0.1:{port}/invocations"
        status, body = _post(url, {"dataframe_records": [{"n": 3, "temperature": 1.0, "seed": 7}]})
        assert status == 200, body
        faces = np.asarray(body["predictions"], np.uint8)
        np.testing.assert_array_equal(faces, expected)  # the mixture's faces, seed for seed
        status, body = _post(url, {"dataframe_records": [{"n": 0}]})
        assert status == 400 and "n=0 must be a whole number" in body["message"]
    finally:
        server.terminate()
        server.wait(timeout=60)
