from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline import tracking
from pipeline import train as train_module
from pipeline.artifacts import load_network
from pipeline.callbacks import TrainingDiverged
from pipeline.checkpoint import Checkpoint
from pipeline.checksums import file_sha256
from pipeline.dataset import load_faces
from pipeline.errors import PipelineError
from tests.conftest import run_training
from tests.lfw_fixtures import TINY_SOURCE


def client_for(cfg) -> MlflowClient:
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    return MlflowClient()


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_a_run_logs_params_epochs_pictures_and_a_loadable_model(
    tiny_cfg, tiny_prepared: Path, tmp_path: Path
) -> None:
    cfg = tiny_cfg("train.epochs=4", "train.kl_warmup_epochs=2")
    result = run_training(cfg, tiny_prepared, tmp_path)
    client = client_for(cfg)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.latent_dim"] == "4" and run.data.params["train.epochs"] == "4"
    assert run.data.tags["data_version"] == file_sha256(tiny_prepared)[:16]
    assert run.data.tags["git_commit"] and run.data.tags["device"].startswith("tensorflow")
    for metric in (
        "loss",
        "reconstruction",
        "kl",
        "val_loss",
        "val_reconstruction",
        "val_kl",
        "beta",
        "images_per_s",
    ):
        assert [m.step for m in client.get_metric_history(result.run_id, metric)] == [1, 2, 3, 4], (
            metric
        )
    assert [m.value for m in client.get_metric_history(result.run_id, "beta")] == [
        0.5,
        1.0,
        1.0,
        1.0,
    ]  # warm-up
    loss = [m.value for m in client.get_metric_history(result.run_id, "loss")]
    assert loss[-1] < loss[0]  # it learns
    assert "config.yaml" in artifact_paths(client, result.run_id)
    # sample grids every train.sample_every epochs and at the end, as MLflow images with steps
    # `samples` from the default sampler (the mixture), the prior's grid under its own key
    assert tracking.image_steps(result.run_id) == {
        "samples": [2, 4],
        "samples_prior": [2, 4],
        "reconstructions": [4],
    }
    run = client.get_run(result.run_id)
    # the config's own name and the builder it uses, both as they were composed
    assert run.data.params["model.arch"] == "conv" and run.data.tags["model"] == cfg.model.name
    assert run.data.params["train.jit_compile"] == "False"  # `auto` resolved for this CPU
    # data params describe the file that was read, not the composed download/prepare config
    faces = load_faces(tiny_prepared)
    assert run.data.params["data.train_images"] == str(int((faces.split == "train").sum()))
    assert run.data.params["data.images"] == str(len(faces.images))
    assert not any(k.startswith("data.download.") for k in run.data.params)
    assert run.data.params["data.source"] == TINY_SOURCE
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert dataset.digest == file_sha256(tiny_prepared)[:16] and dataset.name == "faces.npz"
    # runs:/<id>/decoder still names the decoder: out of the run's one logged model
    decoder = load_network(f"runs:/{result.run_id}/decoder", cfg.tracking)
    faces = decoder.predict(np.zeros((3, 4), np.float32), verbose=0)
    assert faces.shape == (3, 16, 16, 3) and faces.min() >= 0 and faces.max() <= 1
    import keras

    local = keras.models.load_model(tmp_path / "models/decoder.keras")
    np.testing.assert_allclose(
        local.predict(np.zeros((1, 4), np.float32), verbose=0), faces[:1], rtol=1e-5
    )
    assert (tmp_path / "reports/train_history.csv").read_text().count("\n") == 5


def test_same_seed_gives_same_metrics(tiny_cfg, tiny_prepared: Path, tmp_path: Path) -> None:
    a = run_training(tiny_cfg("train.epochs=2"), tiny_prepared, tmp_path / "a")
    b = run_training(tiny_cfg("train.epochs=2"), tiny_prepared, tmp_path / "b")
    c = run_training(tiny_cfg("train.epochs=2", "train.seed=7"), tiny_prepared, tmp_path / "c")
    keys = ("loss", "val_loss", "kl")
    assert [[r[k] for k in keys] for r in a.history] == [[r[k] for k in keys] for r in b.history]
    assert a.history[-1]["loss"] != c.history[-1]["loss"]


def test_a_critic_trains_nothing_before_its_start_epoch_and_changes_training_after(
    tiny_cfg, tiny_prepared: Path, tmp_path: Path
) -> None:
    plain = run_training(tiny_cfg("train.epochs=3"), tiny_prepared, tmp_path / "plain")
    cfg_overrides = (
        "train.epochs=3",
        "model.adversarial_weight=1000",
        "model.critic_widths=[8,16]",
        "train.adversarial_start_epoch=2",
    )
    critic = run_training(tiny_cfg(*cfg_overrides), tiny_prepared, tmp_path / "critic")
    keys = ("reconstruction", "kl", "val_reconstruction")
    # epochs 1-2: the same updates as without a critic (its terms weigh 0 before the start)
    for a, b in zip(plain.history[:2], critic.history[:2], strict=True):
        np.testing.assert_allclose([b[k] for k in keys], [a[k] for k in keys], rtol=1e-5)
    # epoch 3: the decoder's pull changes what the VAE learns
    assert not np.allclose(
        [critic.history[2][k] for k in keys], [plain.history[2][k] for k in keys], rtol=1e-4
    )
    assert all(k in critic.history[-1] for k in ("critic", "adversarial", "val_critic"))
    assert "critic" not in plain.history[-1]
    # before its start the step is traced without the critic (nothing of it computed: 0 logged);
    # from the start epoch on, the re-traced step runs it (a fresh critic's hinge loss is about 1)
    assert [row["critic"] for row in critic.history[:2]] == [0.0, 0.0]
    assert critic.history[2]["critic"] > 0.1 and critic.history[2]["val_critic"] > 0.1
    # a critic on samples draws its codes only once it is on: its first epochs are the same
    # updates too (so its run can start from any critic run's checkpoint at the start epoch)
    samples = run_training(
        tiny_cfg(*cfg_overrides, "model.critic_fakes=samples"), tiny_prepared, tmp_path / "s"
    )
    for a, b in zip(plain.history[:2], samples.history[:2], strict=True):
        np.testing.assert_allclose([b[k] for k in keys], [a[k] for k in keys], rtol=1e-5)
    for other in (plain, critic):
        assert not np.allclose(
            [samples.history[2][k] for k in keys], [other.history[2][k] for k in keys], rtol=1e-4
        )
    assert samples.history[2]["critic"] > 0.1


def test_interrupted_run_resumes_into_the_same_mlflow_run(
    tiny_cfg, tiny_prepared: Path, tmp_path: Path, monkeypatch
) -> None:
    cfg = tiny_cfg("train.epochs=4")
    reference = run_training(cfg, tiny_prepared, tmp_path / "reference")

    original = train_module.EpochEnd.on_epoch_end

    def die_after_epoch_2(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch + 1 == 2:
            raise KeyboardInterrupt("simulated kill after epoch 2")

    monkeypatch.setattr(train_module.EpochEnd, "on_epoch_end", die_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tiny_prepared, tmp_path)
    (folder,) = [p for p in (tmp_path / "models/checkpoints").iterdir() if p.is_dir()]
    assert Checkpoint.load(folder).epoch == 2
    monkeypatch.setattr(train_module.EpochEnd, "on_epoch_end", original)

    resumed = run_training(cfg, tiny_prepared, tmp_path)
    assert resumed.resumed_from == 2
    client = client_for(cfg)
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id]
    )
    interrupted = [r for r in runs if r.info.run_id != reference.run_id]
    assert [r.info.run_id for r in interrupted] == [resumed.run_id]  # no second run was started
    assert interrupted[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(resumed.run_id, "loss")] == [1, 2, 3, 4]
    # the resumed run is the run an uninterrupted one would have been
    np.testing.assert_allclose(
        [r["loss"] for r in resumed.history], [r["loss"] for r in reference.history], rtol=1e-5
    )


def test_epochs_checkpointed_but_not_logged_are_logged_on_resume(
    tiny_cfg, tiny_prepared: Path, tmp_path: Path, monkeypatch
) -> None:
    cfg = tiny_cfg("train.epochs=3")
    real_log = mlflow.log_metrics

    def die_before_logging_epoch_2(metrics, step=None, **kw):
        if step == 2:
            raise KeyboardInterrupt("killed between checkpoint and MLflow")
        return real_log(metrics, step=step, **kw)

    monkeypatch.setattr(mlflow, "log_metrics", die_before_logging_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tiny_prepared, tmp_path)
    monkeypatch.setattr(mlflow, "log_metrics", real_log)
    result = run_training(cfg, tiny_prepared, tmp_path)
    assert [m.step for m in client_for(cfg).get_metric_history(result.run_id, "kl")] == [1, 2, 3]


def test_nan_loss_stops_with_a_clear_message_and_a_failed_run(
    tiny_cfg, tiny_prepared: Path, tmp_path: Path
) -> None:
    cfg = tiny_cfg("train.learning_rate=1e12", "model.likelihood=gaussian", "train.epochs=3")
    with pytest.raises(TrainingDiverged, match=r"became (nan|inf).*lower train.learning_rate"):
        run_training(cfg, tiny_prepared, tmp_path)
    client = client_for(cfg)
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id]
    )
    assert [r.info.status for r in runs] == ["FAILED"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.latent_dim=0", "latent_dim=0"),
        ("model.beta=-0.5", "beta=-0.5"),
        ("train.batch_size=0", "train.batch_size=0"),
        ("train.epochs=-1", "train.epochs=-1"),
        ("model.arch=nope", "model.arch='nope' is unknown"),
        ("model.widths=[8,16,32,64,128]", "multiple of 32"),
        ("train.mixed_precision=float8", "train.mixed_precision='float8' is invalid"),
        ("train.learning_rate=0", "train.learning_rate=0.0 is invalid"),
        ("train.seed=abc", r"train.seed: Value 'abc' of type 'str' could not be converted"),
        ("model.widths=[32,abc]", r"model.widths\[1\]: Value 'abc'"),
        ("model.hidden=-1", "model.hidden=-1 must be an integer >= 0"),
        ("model.latent_dim=true", r"model.latent_dim: Value 'True' of type 'bool'"),
        ("+train.foo=1", r"train.foo: Key 'foo' not in 'TrainSchema'"),
        ("train.float32_layers=[latent,decoder]", "train.float32_layers=.* is invalid"),
    ],
)
def test_bad_config_fails_before_training(
    tiny_cfg, tiny_prepared: Path, tmp_path: Path, override: str, message: str
) -> None:
    with pytest.raises(PipelineError, match=message):
        run_training(tiny_cfg(override), tiny_prepared, tmp_path)
    assert not (tmp_path / "mlruns").exists()  # nothing was started


def cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m pipeline.train ARGS` in cwd (env: the process environment, default this one's)."""
    env = {**(os.environ if env is None else env), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def tiny_cli_overrides(tmp_path: Path) -> list[str]:
    from tests.conftest import TINY_MODEL

    return [
        *TINY_MODEL,
        "train.epochs=1",
        f"tracking.tracking_uri=sqlite:///{tmp_path}/mlruns/mlflow.db",
        f"tracking.artifact_location={tmp_path}/mlruns/artifacts",
        f"paths.prepared={tmp_path}/prepared",
        f"paths.models={tmp_path}/models",
        f"paths.reports={tmp_path}/reports",
    ]


def test_multirun_sweep_makes_grouped_runs(tiny_prepared: Path, tmp_path: Path) -> None:
    proc = cli(
        [
            "--multirun",
            *tiny_cli_overrides(tmp_path),
            "model.latent_dim=2,4",
            "model.beta=0.5,1",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("lfw-vae").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(children) == 4 and len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    combos = {(r.data.params["model.latent_dim"], r.data.params["model.beta"]) for r in children}
    # params hold the typed values (β is a float: 1 is logged as 1.0)
    assert combos == {("2", "0.5"), ("2", "1.0"), ("4", "0.5"), ("4", "1.0")}
    for run in children:  # the run name is the job's override string, so the UI tells jobs apart
        assert f"model.latent_dim={run.data.params['model.latent_dim']}" in run.info.run_name
        beta = float(run.info.run_name.rsplit("model.beta=", 1)[1])
        assert beta == float(run.data.params["model.beta"])
        assert "paths." not in run.info.run_name
    assert all(r.info.status == "FINISHED" for r in children)


def test_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    proc = cli([*tiny_cli_overrides(tmp_path), "model.latent_dim=0"], tmp_path)
    assert proc.returncode == 1
    assert "prepared data" in proc.stderr and "Traceback" not in proc.stderr  # said first
    from tests.lfw_fixtures import write_tiny_prepared

    write_tiny_prepared(tmp_path / "prepared/faces.npz")
    proc = cli([*tiny_cli_overrides(tmp_path), "model.latent_dim=0"], tmp_path)
    assert proc.returncode == 1
    assert "model.latent_dim=0" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlruns").exists()  # refused before any store was opened


def test_bfloat16_training_logs_what_it_did_and_saves_float32_networks(
    tiny_cfg, tiny_prepared: Path, tmp_path: Path
) -> None:
    import keras

    cfg = tiny_cfg("train.epochs=2", "train.mixed_precision=bfloat16")
    result = run_training(cfg, tiny_prepared, tmp_path)
    assert all(np.isfinite(row["loss"]) for row in result.history)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    params = client_for(cfg).get_run(result.run_id).data.params
    assert params["train.mixed_precision"] == "bfloat16" and params["train.fused_adam"] == "True"
    for name in ("encoder", "decoder"):
        model = keras.models.load_model(tmp_path / f"models/{name}.keras")
        assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}, name
    faces = keras.models.load_model(tmp_path / "models/decoder.keras").predict(
        np.zeros((2, 4), np.float32), verbose=0
    )
    assert faces.dtype == np.float32 and np.isfinite(faces).all()


def test_a_finished_config_trained_again_is_a_new_run(
    tiny_cfg, tiny_prepared: Path, tmp_path: Path
) -> None:
    cfg = tiny_cfg("train.epochs=2")
    first = run_training(cfg, tiny_prepared, tmp_path)
    again = run_training(cfg, tiny_prepared, tmp_path)
    assert again.run_id != first.run_id and again.resumed_from == 0
    assert client_for(cfg).get_run(again.run_id).info.status == "FINISHED"


def test_bad_evaluate_after_training_fails_before_training(
    tiny_prepared: Path, tmp_path: Path
) -> None:
    proc = cli([*tiny_cli_overrides(tmp_path), "evaluate.after_training=sometimes"], tmp_path)
    assert proc.returncode == 1
    assert "evaluate.after_training='sometimes' is invalid" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlruns").exists()  # nothing was started
