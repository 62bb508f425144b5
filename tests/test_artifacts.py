from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.artifacts import load_local, load_network, load_run
from pipeline.errors import PipelineError


def test_evaluate_any_mlflow_run(trained_tiny: dict, tmp_path: Path) -> None:
    vae = load_run(trained_tiny["run_id"], trained_tiny["cfg"].tracking)
    assert vae.card["run_id"] == trained_tiny["run_id"] and vae.card["latent_dim"] == 4
    local = load_local(trained_tiny["root"] / "models")
    z = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(
        vae.decoder.predict(z, verbose=0), local.decoder.predict(z, verbose=0), rtol=1e-5
    )


def test_unknown_run_id_is_one_clear_error(trained_tiny: dict) -> None:
    with pytest.raises(PipelineError, match=r"MLflow run 'f+' does not exist"):
        load_run("f" * 32, trained_tiny["cfg"].tracking)


def test_wrong_kind_of_model_file(trained_tiny: dict, tmp_path: Path) -> None:
    tracking = trained_tiny["cfg"].tracking
    with pytest.raises(PipelineError, match="is not a VAE decoder"):
        load_network(str(trained_tiny["root"] / "models/encoder.keras"), tracking)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(PipelineError, match=r"is not a Keras model file: .* zip archive") as err:
        load_network(str(junk), tracking)
    assert "File not found" not in str(err.value)  # it exists: it is the content that is wrong
    with pytest.raises(PipelineError, match="does not exist"):
        load_network(str(tmp_path / "missing.keras"), tracking)
    with pytest.raises(PipelineError, match=r"MLflow run '0+' does not exist"):
        load_network("0" * 32, tracking)


def test_model_with_code_is_refused_by_safe_mode(tmp_path: Path, trained_tiny: dict) -> None:
    inputs = keras.Input((4,))
    # arbitrary Python: could do anything on load
    outputs = keras.layers.Lambda(lambda z: z * 2)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    with pytest.raises(PipelineError, match=r"Lambda layer.*refused"):
        load_network(str(tmp_path / "lambda.keras"), trained_tiny["cfg"].tracking)


def test_a_run_without_a_model_is_one_clear_error(trained_tiny: dict) -> None:
    import mlflow

    cfg = trained_tiny["cfg"]
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    with mlflow.start_run(
        experiment_id=mlflow.get_experiment_by_name("lfw-vae").experiment_id
    ) as run:
        mlflow.log_metric("x", 1.0)  # a run, but no trained VAE in it
    with pytest.raises(PipelineError, match=f"MLflow run {run.info.run_id} holds no trained VAE"):
        load_run(run.info.run_id, cfg.tracking)


@pytest.mark.parametrize(
    ("card", "message"),
    [("{not json", "is not valid JSON"), ('{"model": "conv"}', r"lacks \['run_id'")],
)
def test_corrupt_model_card_is_one_clear_error(
    trained_tiny: dict, tmp_path: Path, card: str, message: str
) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained_tiny["root"] / "models", models)
    (models / "vae.json").write_text(card)
    with pytest.raises(PipelineError, match=message):
        load_local(models)


@pytest.mark.parametrize(
    "speed",
    [
        ["train.mixed_precision=false", "train.fused_adam=false", "train.steps_per_execution=1"],
        ["train.mixed_precision=bfloat16", "train.float32_layers=[]"],
        ["train.mixed_precision=bfloat16"],  # the defaults where bfloat16 is fast
        ["train.mixed_precision=false", "train.steps_per_execution=3"],
    ],
    ids=["plain", "bf16-all", "bf16-f32-latent-output", "fused-3-steps"],
)
def test_saved_networks_reconstruct_as_the_trained_model_does(
    tiny_cfg, tiny_prepared: Path, tmp_path: Path, speed: list[str]
) -> None:
    """The saved float32 files are the weights that were trained: their reconstruction loss at
    z = μ(x) on held-out faces equals the training model's own, whatever the speed settings."""
    from pipeline.artifacts import save_vae
    from pipeline.dataset import TrainingInput, load_faces, to_float
    from pipeline.device import resolve_device_settings, set_numerics
    from pipeline.losses import reconstruction_nll
    from pipeline.model import compiled_vae
    from pipeline.schema import validate_train_config

    faces = load_faces(tiny_prepared)
    cfg = resolve_device_settings(validate_train_config(tiny_cfg(*speed), faces.image_size))
    set_numerics(cfg)
    vae = compiled_vae(cfg, faces.image_size)
    train = faces.subset("train").images
    feed = TrainingInput(train, cfg.train.batch_size, cfg.train.seed, 2)
    vae.fit(feed.data, epochs=2, callbacks=[feed.callback], verbose=0)
    x = to_float(faces.subset("val").images)

    def bce_at_mean(encoder: keras.Model, decoder: keras.Model) -> float:
        z, _ = encoder.predict(x, verbose=0)
        x_hat = np.asarray(decoder.predict(z, verbose=0), np.float32)
        return float(
            np.mean(keras.ops.convert_to_numpy(reconstruction_nll(x, x_hat, "bce_channel_mean")))
        )

    trained = bce_at_mean(vae.encoder, vae.decoder)
    card = {"run_id": "-", "latent_dim": 4, "likelihood": "bce_channel_mean", "image_size": 16}
    save_vae(cfg.model, vae.encoder, vae.decoder, card, tmp_path / "models")
    saved = load_local(tmp_path / "models")
    assert {layer.dtype_policy.name for layer in saved.decoder.layers} == {"float32"}
    # bfloat16 compute rounds to 8 bits of mantissa, so the two agree to a few parts in 1000
    tolerance = 5e-3 if cfg.train.mixed_precision else 1e-5
    assert bce_at_mean(saved.encoder, saved.decoder) == pytest.approx(trained, rel=tolerance)


def test_a_run_logged_before_the_generator_still_loads(trained_tiny: dict, tmp_path: Path) -> None:
    """Runs of older versions logged the encoder and decoder as Keras models, no generator: they
    still evaluate and generate."""
    import json

    import mlflow

    cfg = trained_tiny["cfg"]
    local = load_local(trained_tiny["root"] / "models")
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    # its own experiment: the shared store's lfw-vae runs stay as other tests expect them
    experiment = mlflow.create_experiment("pre-generator", artifact_location=str(tmp_path))
    with mlflow.start_run(experiment_id=experiment) as run:
        card = json.loads((trained_tiny["root"] / "models/vae.json").read_text())
        mlflow.log_dict({**card, "run_id": run.info.run_id}, "vae.json")
        for name, network in [("encoder", local.encoder), ("decoder", local.decoder)]:
            mlflow.keras.log_model(network, name=name, pip_requirements=["keras"])
    old = load_run(run.info.run_id, cfg.tracking)
    assert old.card["run_id"] == run.info.run_id and old.mixture is None
    z = np.ones((2, 4), np.float32)
    expected = local.decoder.predict(z, verbose=0)
    np.testing.assert_allclose(old.decoder.predict(z, verbose=0), expected, rtol=1e-5)
    decoder = load_network(f"runs:/{run.info.run_id}/decoder", cfg.tracking)
    np.testing.assert_allclose(decoder.predict(z, verbose=0), expected, rtol=1e-5)
    encoder = load_network(run.info.run_id, cfg.tracking, part="encoder")
    assert len(encoder.outputs) == 2
