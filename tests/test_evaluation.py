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
    cfg = OmegaConf.merge(
        trained_tiny["cfg"],
        {
            "evaluate": {
                "sampler": "gmm",
                "fid_extra": ["prior", "reconstructions"],
                "fid_sizes": [4, 8, 50],  # 50 > the 12 samples: left out
            }
        },
    )
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
        # the same samples against the validation faces: what model selection ranks by
        assert result["val_fid"] == result["val_fid_gmm"] != result["fid_gmm"]
        assert result["val_kid"] == result["val_kid_gmm"] and np.isfinite(result["val_fid_prior"])
        assert result["kid"] == result["kid_gmm"] and np.isfinite(result["kid_prior"])
        assert result["fid_reconstructions"] > 0
        # FID at subsets of the default sampler's faces and its extrapolation to n = ∞
        assert result["fid_n12"] == pytest.approx(result["fid"])
        assert {"fid_n4", "fid_n8"} <= set(result) and "fid_n50" not in result
        assert np.isfinite(result["fid_inf"])
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
        assert run.data.metrics["val_fid"] == pytest.approx(result["val_fid_gmm"])
        assert "test_val_fid" not in run.data.metrics
    assert run.data.tags["eval.sampler"] == "gmm"  # which sampler test_fid / val_fid come from
    assert {a.path for a in MlflowClient().list_artifacts(vae.card["run_id"], "evaluation")} >= {
        "evaluation/metrics.json",
        "evaluation/attribute_edits.png",
    }


def test_a_model_without_its_sampler_stops_unless_the_prior_is_asked_for(
    trained_tiny: dict, tmp_path: Path
) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained_tiny["root"] / "models", models)
    (models / "sampler.npz").unlink()  # lost, or trained before samplers existed
    vae = load_local(models)
    assert vae.mixture is None
    faces = load_faces(trained_tiny["prepared"])
    cfg = OmegaConf.merge(trained_tiny["cfg"], {"evaluate": {"sampler": "gmm", "fid": False}})
    # no silent fallback: the prior's faces are not the model's faces
    with pytest.raises(PipelineError, match=r"no ex-post sampler .*evaluate.sampler=prior"):
        evaluate(cfg, vae, faces, tmp_path / "e")
    assert not (tmp_path / "e").exists()
    prior = OmegaConf.merge(cfg, {"evaluate": {"sampler": "prior"}})
    result = evaluate(prior, vae, faces, tmp_path / "e")
    assert result["sampler"] == "prior" and "fid_gmm" not in result


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("n_samples", -5, "n_samples=-5 must be a positive integer"),
        ("importance_samples", 0, "importance_samples=0 must be a positive integer"),
        ("temperatures", [1.0, -0.5], "each must be > 0"),
        ("fid_sizes", [500, 1], r"fid_sizes=\[500, 1\]: each must be an integer >= 2"),
        ("sampler", "bogus", "sampler='bogus' is unknown"),
        ("fid_extra", ["prior", "vamp"], r"\['vamp'\] unknown; choose from prior, gmm, rec"),
    ],
)
def test_bad_evaluate_values_are_one_clear_error(
    tiny_cfg, tiny_prepared: Path, key: str, value: object, message: str
) -> None:
    from pipeline.evaluation import validate_evaluate_config

    cfg = tiny_cfg()
    cfg.evaluate[key] = value
    with pytest.raises(PipelineError, match=message):
        validate_evaluate_config(cfg.evaluate)


def test_bad_sampler_name_is_one_clear_error(trained_tiny: dict, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(trained_tiny["cfg"]))
    cfg.evaluate.sampler = "vamp"
    vae = load_local(trained_tiny["root"] / "models")
    with pytest.raises(PipelineError, match="sampler='vamp' is unknown"):
        evaluate(cfg, vae, load_faces(trained_tiny["prepared"]), tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_by_default_only_the_default_sampler_costs_an_inception_pass(
    trained_tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real faces' features come from the cache; each generated set is one pass of the network,
    the cost of an evaluation, so the prior and the reconstructions are measured only on request."""
    if metrics.fid_unavailable_reason() is not None:
        pytest.skip("needs the [fid] extra")
    passes: list[str] = []
    real = metrics.inception_features

    def counting(images, batch_size=50, desc=""):
        passes.append(desc)
        return real(images, batch_size, desc)

    monkeypatch.setattr(metrics, "inception_features", counting)
    cfg = OmegaConf.merge(
        trained_tiny["cfg"], {"evaluate": {"sampler": "gmm", "cache_dir": str(tmp_path / "c")}}
    )
    vae, faces = load_local(trained_tiny["root"] / "models"), load_faces(trained_tiny["prepared"])
    evaluate(cfg, vae, faces, tmp_path / "a")
    assert passes == ["FID: test faces", "FID: val faces", "FID: gmm samples"]
    passes.clear()
    result = evaluate(cfg, vae, faces, tmp_path / "b")
    assert passes == ["FID: gmm samples"]  # the real faces' features came from the cache
    assert result["fid"] == result["fid_gmm"] and "fid_prior" not in result
    assert "fid_reconstructions" not in result
    # asking for the mixture beside a prior default measures both, each under its own name
    both = OmegaConf.merge(cfg, {"evaluate": {"sampler": "prior", "fid_extra": ["gmm"]}})
    passes.clear()
    result = evaluate(both, vae, faces, tmp_path / "c2")
    assert passes == ["FID: prior samples", "FID: gmm samples"]
    assert result["fid"] == result["fid_prior"] != result["fid_gmm"]
