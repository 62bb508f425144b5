"""Faults with real processes, signals, files and servers: whatever dies, nothing is lost.

Run alone with `pytest -m faults`. Every case here is part of the normal suite (about two minutes).
"""

from __future__ import annotations

import errno
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline import checkpoint as checkpoint_module
from pipeline.errors import exit_on_pipeline_error
from pipeline.prepare import prepare
from tests.conftest import TINY_MODEL, run_training
from tests.http_server import Route
from tests.lfw_fixtures import face_jpeg, make_archive, write_tiny_prepared

pytestmark = pytest.mark.faults
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def start(module: str, args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=ENV,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def run(module: str, args: list[str], cwd: Path, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=preexec_fn,  # e.g. resource limits set in the child only
    )


def download_args(root: Path, url: str, images: int) -> list[str]:
    return [
        f"data.download.sources=[{url}]",
        f"data.download.expected_images={images}",
        "data.download.content_sha256=null",
        f"paths.raw={root}/raw",
        f"paths.downloads={root}/dl",
        f"hydra.run.dir={root}/hydra",
    ]


def wait_for(condition, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- download and prepare


def test_kill9_during_download_resumes_and_never_exposes_partial_data(
    tmp_path: Path, lfw_source: dict, http_server
) -> None:
    body = lfw_source["archive"].read_bytes()
    http_server.routes["/lfw.tgz"] = route = Route(body, chunk=2048, delay_per_chunk_s=0.05)
    args = download_args(tmp_path, f"{http_server.url}/lfw.tgz", len(lfw_source["keys"]))
    proc = start("pipeline.download", args, tmp_path, tmp_path / "first.log")
    parts = lambda: list((tmp_path / "dl").glob("*.part")) if (tmp_path / "dl").exists() else []  # noqa: E731
    wait_for(lambda: parts() and parts()[0].stat().st_size > 8192, what="a partial download")
    proc.kill()
    proc.wait()
    partial = parts()[0].stat().st_size
    assert 0 < partial < len(body)
    # nothing half-extracted is taken as data
    assert not (tmp_path / "raw/lfw-deepfunneled").exists()

    route.delay_per_chunk_s = 0.0
    second = run("pipeline.download", args, tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert route.requests[-1]["Range"] == f"bytes={partial}-"
    summary = json.loads((tmp_path / "raw/download.json").read_text())
    assert summary["images"] == len(lfw_source["keys"])


def test_file_size_limit_while_unpacking_keeps_the_archive(
    tmp_path: Path, lfw_source: dict, http_server
) -> None:
    """A write error of the machine (here RLIMIT_FSIZE: EFBIG; a full disk takes the same path)
    is said as such, and the good archive stays for the rerun instead of being deleted."""
    tree = tmp_path / "src"
    shutil.copytree(lfw_source["dir"], tree / "lfw-deepfunneled")
    big = next((tree / "lfw-deepfunneled").rglob("*.jpg"))
    big.write_bytes(big.read_bytes() + bytes(400_000))  # unpacks large, compresses to nothing
    body = make_archive(tree, tmp_path / "lfw.tgz").read_bytes()
    limit = 200_000
    assert len(body) < limit
    http_server.routes["/lfw.tgz"] = route = Route(body)
    args = download_args(tmp_path, f"{http_server.url}/lfw.tgz", len(lfw_source["keys"]))
    limited = run(
        "pipeline.download",
        args,
        tmp_path,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert limited.returncode == 1, limited.stderr[-2000:]
    assert "file too large" in limited.stderr and "kept" in limited.stderr
    assert "Traceback" not in limited.stderr and "corrupt" not in limited.stderr
    assert [p.read_bytes() for p in (tmp_path / "dl").iterdir()] == [body]
    assert not (tmp_path / "raw/lfw-deepfunneled").exists()
    again = run("pipeline.download", args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(route.requests) == 1  # the kept archive was used: no second download


def test_kill9_during_prepare_leaves_old_file_or_none(tmp_path: Path, lfw_source: dict) -> None:
    root = tmp_path / "raw/lfw-deepfunneled"
    for p in range(60):  # 600 images: prepare runs long enough to be killed mid-way
        person = f"Person_{p:03d}"
        (root / person).mkdir(parents=True)
        for n in range(1, 11):
            (root / person / f"{person}_{n:04d}.jpg").write_bytes(face_jpeg(p * 10 + n))
    args = [
        "data.attributes=false",
        f"paths.raw={tmp_path}/raw",
        f"paths.prepared={tmp_path}/prepared",
        f"paths.reports={tmp_path}/reports",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    good = run("pipeline.prepare", args, tmp_path)
    assert good.returncode == 0, good.stderr[-2000:]
    good_bytes = (tmp_path / "prepared/faces.npz").read_bytes()
    rng = random.Random(0)
    for attempt in range(4):
        proc = start(
            "pipeline.prepare",
            [*args, f"data.prepare.split.seed={attempt + 1}"],
            tmp_path,
            tmp_path / "killed.log",
        )
        time.sleep(rng.uniform(1.0, 4.0))
        proc.kill()
        proc.wait()
        now = (tmp_path / "prepared/faces.npz").read_bytes()
        assert (
            now == good_bytes or np.load(tmp_path / "prepared/faces.npz")["images"].shape[0] == 600
        )
    final = run("pipeline.prepare", args, tmp_path)
    assert final.returncode == 0
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["faces.npz", "samples.png"]


# --------------------------------------------------------------------------- training


def train_args(root: Path, epochs: int = 10) -> list[str]:
    return [
        *[o for o in TINY_MODEL if not o.startswith("train.epochs")],
        f"train.epochs={epochs}",
        "train.batch_size=8",
        f"tracking.tracking_uri=sqlite:///{root}/mlruns/mlflow.db",
        f"tracking.artifact_location={root}/mlruns/artifacts",
        f"paths.prepared={root}/prepared",
        f"paths.models={root}/models",
        f"paths.reports={root}/reports",
        f"hydra.run.dir={root}/hydra",
    ]


def training_past_its_first_checkpoint(root: Path, args: list[str], log: str) -> subprocess.Popen:
    """A 10-epoch training on 600 tiny faces, started in a child and returned once it has
    written its first checkpoint (or ended)."""
    write_tiny_prepared(root / "prepared/faces.npz", n=600)
    proc = start("pipeline.train", args, root, root / log)
    wait_for(
        lambda: checkpoint_epoch(root) >= 1 or proc.poll() is not None,
        what="a first checkpoint",
    )
    return proc


def checkpoint_epoch(root: Path) -> int:
    folders = (
        [p for p in (root / "models/checkpoints").glob("[!.]*") if p.is_dir()]
        if (root / "models/checkpoints").exists()
        else []
    )
    if not folders:
        return 0
    return json.loads((folders[0] / "state.json").read_text())[
        "epoch"
    ]  # always parseable: never torn


def assert_each_epoch_logged_once(root: Path, epochs: int) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlruns/mlflow.db")
    client = MlflowClient()
    (run_,) = client.search_runs([client.get_experiment_by_name("lfw-vae").experiment_id])
    assert run_.info.status == "FINISHED"
    for metric in ("loss", "val_loss", "kl"):
        assert sorted(m.step for m in client.get_metric_history(run_.info.run_id, metric)) == list(
            range(1, epochs + 1)
        ), metric


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The final metrics of the 10-epoch training that the kill tests interrupt, run whole."""
    root = tmp_path_factory.mktemp("uninterrupted")
    write_tiny_prepared(root / "prepared/faces.npz", n=600)
    done = run("pipeline.train", train_args(root), root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((root / "reports/train.json").read_text())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill9_during_training_resumes_with_nothing_lost(
    tmp_path: Path, seed: int, uninterrupted: dict
) -> None:
    """Under the default speed settings (8 steps per call; 400 train faces in batches of 8 are 50
    steps, not a multiple of 8), a killed and resumed run ends with the numbers of a whole one."""
    args = train_args(tmp_path)
    proc = training_past_its_first_checkpoint(tmp_path, args, "killed.log")
    time.sleep(random.Random(seed).uniform(0.0, 1.5))  # somewhere in a later epoch, or mid-write
    proc.kill()
    proc.wait()
    killed_at = checkpoint_epoch(tmp_path)
    resumed = run("pipeline.train", args, tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert killed_at == 10 or "resuming from epoch" in resumed.stdout + resumed.stderr
    assert_each_epoch_logged_once(tmp_path, 10)
    assert json.loads((tmp_path / "reports/train.json").read_text()) == uninterrupted
    decoder = keras.models.load_model(tmp_path / "models/decoder.keras")
    assert decoder.predict(np.zeros((1, 4), np.float32), verbose=0).shape == (1, 16, 16, 3)


def test_two_trainings_of_one_config_do_not_share_a_checkpoint(tmp_path: Path) -> None:
    args = train_args(tmp_path)
    first = training_past_its_first_checkpoint(tmp_path, args, "first.log")
    second = run("pipeline.train", args, tmp_path)
    assert second.returncode == 1
    assert f"process {first.pid} " in second.stderr and "already training" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert_each_epoch_logged_once(tmp_path, 10)


def test_sigterm_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    write_tiny_prepared(tmp_path / "prepared/faces.npz", n=600)
    args = train_args(tmp_path)
    proc = start("pipeline.train", args, tmp_path, tmp_path / "term.log")
    wait_for(lambda: checkpoint_epoch(tmp_path) >= 1, what="a first checkpoint")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert "rerun the same command to resume" in (tmp_path / "term.log").read_text()
    stopped_at = checkpoint_epoch(tmp_path)
    assert 1 <= stopped_at < 10
    resumed = run("pipeline.train", args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_each_epoch_logged_once(tmp_path, 10)


def test_sigterm_during_a_checkpoint_write_waits_for_it(tmp_path: Path, tiny_cfg) -> None:
    """The handler defers while writing: the signal lands mid-save, the save completes, then it stops."""
    prepared = write_tiny_prepared(tmp_path / "prepared/faces.npz")
    original_save = checkpoint_module.Checkpoint.save

    def save_and_get_terminated(self, model):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the checkpoint is being written
        original_save(self, model)

    cfg = tiny_cfg("train.epochs=3")
    try:
        checkpoint_module.Checkpoint.save = save_and_get_terminated
        with pytest.raises(checkpoint_module.Terminated, match="after writing the checkpoint"):
            run_training(cfg, prepared, tmp_path)
    finally:
        checkpoint_module.Checkpoint.save = original_save
    assert checkpoint_epoch(tmp_path) == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again


def test_concurrent_sweep_jobs_share_one_sqlite_store(tmp_path: Path) -> None:
    write_tiny_prepared(tmp_path / "prepared/faces.npz")
    procs = [
        start(
            "pipeline.train",
            [
                *train_args(tmp_path, epochs=2),
                f"train.seed={i}",
                f"paths.models={tmp_path}/models{i}",
                f"hydra.run.dir={tmp_path}/h{i}",
            ],
            tmp_path,
            tmp_path / f"job{i}.log",
        )
        for i in range(4)
    ]
    codes = [p.wait(timeout=900) for p in procs]
    logs = "".join((tmp_path / f"job{i}.log").read_text() for i in range(4))
    assert codes == [0, 0, 0, 0], logs[-4000:]
    assert "database is locked" not in logs
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("lfw-vae").experiment_id])
    assert sorted(r.data.params["train.seed"] for r in runs) == ["0", "1", "2", "3"]
    assert all(r.info.status == "FINISHED" for r in runs)


# --------------------------------------------------------------------------- disk full


def enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device", "injected")


def test_disk_full_writing_the_prepared_file(
    tmp_path: Path, data_cfg, lfw_source: dict, monkeypatch
) -> None:
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(lfw_source["dir"], raw / "lfw-deepfunneled")
    prepare(data_cfg, raw, tmp_path / "prepared", tmp_path / "reports")
    good = (tmp_path / "prepared/faces.npz").read_bytes()
    monkeypatch.setattr(np, "savez", enospc)
    with pytest.raises(OSError) as err:
        prepare(data_cfg, raw, tmp_path / "prepared", tmp_path / "reports")
    assert err.value.errno == errno.ENOSPC
    assert (tmp_path / "prepared/faces.npz").read_bytes() == good
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["faces.npz", "samples.png"]


def test_disk_full_is_one_clear_line(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        exit_on_pipeline_error(enospc)()
    assert stop.value.code == 1
    assert "no space left on device writing injected" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            errno.EFBIG,
            "File too large (EFBIG) writing data/raw/lfw.tgz.part: the file system refuses",
        ),
        (errno.EROFS, "(EROFS) writing data/raw/lfw.tgz.part: the file system is read-only"),
    ],
)
def test_other_write_errors_are_one_clear_line(capsys, code: int, expected: str) -> None:
    def failing_write() -> None:  # as the download's write into its .part file fails
        raise OSError(code, os.strerror(code), "data/raw/lfw.tgz.part")

    with pytest.raises(SystemExit) as stop:
        exit_on_pipeline_error(failing_write)()
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_disk_full_writing_a_checkpoint_keeps_the_previous_one(
    tmp_path: Path, tiny_cfg, monkeypatch
) -> None:
    prepared = write_tiny_prepared(tmp_path / "prepared/faces.npz")
    calls = {"n": 0}
    real = keras.Model.save_weights

    def full_on_second(self, path, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            enospc()
        return real(self, path, *a, **kw)

    monkeypatch.setattr(keras.Model, "save_weights", full_on_second)
    cfg = tiny_cfg("train.epochs=3")
    with pytest.raises(OSError):
        run_training(cfg, prepared, tmp_path)
    assert checkpoint_epoch(tmp_path) == 1  # epoch 1's checkpoint, whole
    monkeypatch.setattr(keras.Model, "save_weights", real)
    result = run_training(cfg, prepared, tmp_path)
    assert result.resumed_from == 1 and len(result.history) == 3


def test_disk_full_logging_an_artifact_fails_the_run_and_resume_finishes(
    tmp_path: Path, tiny_cfg, monkeypatch
) -> None:
    prepared = write_tiny_prepared(tmp_path / "prepared/faces.npz")
    monkeypatch.setattr(mlflow, "log_artifact", enospc)
    cfg = tiny_cfg("train.epochs=2", "train.sample_every=1")
    with pytest.raises(OSError):
        run_training(cfg, prepared, tmp_path)
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    client = MlflowClient()
    (failed,) = client.search_runs([client.get_experiment_by_name("lfw-vae").experiment_id])
    assert failed.info.status == "FAILED"
    monkeypatch.undo()
    result = run_training(cfg, prepared, tmp_path)
    assert (
        result.run_id == failed.info.run_id
        and client.get_run(result.run_id).info.status == "FINISHED"
    )


# --------------------------------------------------------------------------- config


def test_hydra_override_of_the_wrong_type(tmp_path: Path) -> None:
    write_tiny_prepared(tmp_path / "prepared/faces.npz")
    proc = run("pipeline.train", [*train_args(tmp_path), "model.latent_dim=abc"], tmp_path)
    assert proc.returncode == 1
    assert "model.latent_dim: Value 'abc' of type 'str' could not be converted" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlruns/mlflow.db").exists()
