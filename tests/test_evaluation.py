from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline import metrics, tracking
from pipeline.artifacts import load_local
from pipeline.dataset import load_faces
from pipeline.errors import PipelineError
from pipeline.evaluation import evaluate, log_to_mlflow


def test_evaluate_writes_every_metric_and_picture(trained_tiny: dict, tmp_path: Path) -> None:
    cfg = OmegaConf.merge(trained_tiny["cfg"], {"evaluate": {"sampler": "gmm"}})
    vae = load_local(trained_tiny["root"] / "models")
    result = evaluate(cfg, vae, load_faces(trained_tiny["prepared"]), tmp_path / "eval")
    for key in (
        "mse",
        "psnr",
        "ssim",
        "reconstruction",
        "kl",
        "neg_elbo_nats",
        "iw_nll_nats",
        "active_units",
    ):
        assert np.isfinite(result[key]), key
    assert result["neg_elbo_nats"] == pytest.approx(result["reconstruction"] + result["kl"])
    # k samples tighten the bound (up to noise)
    assert result["iw_nll_nats"] <= result["neg_elbo_nats"] + 1.0
    assert 0 <= result["active_units"] <= 4 and 0 < result["ssim"] <= 1
    assert result["psnr"] == pytest.approx(10 * np.log10(1 / result["mse"]), rel=0.2)
    assert vae.mixture is not None and result["sampler"] == "gmm"  # training fitted one
    if metrics.fid_unavailable_reason() is None:
        assert (
            result["fid"] > 0
            and result["fid_samples"] == 12
            and "Inception" in result["fid_network"]
        )
        # one figure per sampler; `fid` is the default sampler's; reconstructions apart
        assert result["fid"] == result["fid_gmm"] != result["fid_prior"]
        assert result["kid"] == result["kid_gmm"] and np.isfinite(result["kid_prior"])
        assert result["fid_reconstructions"] > 0
    else:
        assert "fid" not in result and result["fid_skipped"]
    assert json.loads((tmp_path / "eval/metrics.json").read_text()) == result
    for picture in (
        "samples_t1.png",
        "samples_t0.7.png",
        "reconstructions.png",
        "interpolations.png",
        "kl_per_dimension.png",
        "attribute_edits.png",
    ):
        assert (tmp_path / "eval" / picture).stat().st_size > 100, picture

    tracking.setup(cfg.tracking)  # the store this model was trained into
    log_to_mlflow(vae.card["run_id"], result, tmp_path / "eval")
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    run = MlflowClient().get_run(vae.card["run_id"])
    assert run.data.metrics["test_mse"] == pytest.approx(result["mse"])
    if metrics.fid_unavailable_reason() is None:
        assert run.data.metrics["test_fid_prior"] == pytest.approx(result["fid_prior"])
        assert run.data.metrics["test_fid_gmm"] == pytest.approx(result["fid_gmm"])
    assert {a.path for a in MlflowClient().list_artifacts(vae.card["run_id"], "evaluation")} >= {
        "evaluation/metrics.json",
        "evaluation/attribute_edits.png",
    }


def test_a_model_without_a_sampler_evaluates_with_the_prior(
    trained_tiny: dict, tmp_path: Path, caplog
) -> None:
    import logging
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained_tiny["root"] / "models", models)
    (models / "sampler.npz").unlink()  # as a model trained before samplers existed
    vae = load_local(models)
    assert vae.mixture is None
    cfg = OmegaConf.merge(trained_tiny["cfg"], {"evaluate": {"sampler": "gmm"}})
    with caplog.at_level(logging.INFO):
        result = evaluate(cfg, vae, load_faces(trained_tiny["prepared"]), tmp_path / "e")
    assert result["sampler"] == "prior" and "fid_gmm" not in result
    assert "no ex-post sampler" in caplog.text


def test_bad_sampler_name_is_one_clear_error(trained_tiny: dict, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(trained_tiny["cfg"]))
    cfg.evaluate.sampler = "vamp"
    vae = load_local(trained_tiny["root"] / "models")
    with pytest.raises(PipelineError, match="sampler='vamp' is unknown"):
        evaluate(cfg, vae, load_faces(trained_tiny["prepared"]), tmp_path / "e")
    assert not (tmp_path / "e").exists()
