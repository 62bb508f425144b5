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
    with pytest.raises(PipelineError, match="is not a Keras model file"):
        load_network(str(junk), tracking)
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
