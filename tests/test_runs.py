from pathlib import Path

import mlflow
import pytest
from PIL import Image

from pipeline.config import compose_config
from pipeline.errors import PipelineError
from pipeline.runs import plot_metric, runs_table


def cfg_for(tmp_path: Path, *extra: str):
    return compose_config(
        [
            f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"tracking.artifact_location={tmp_path}/artifacts",
            *extra,
        ]
    )


def log_run(latent: int, beta: float, loss: float, sweep: str, status: str = "FINISHED") -> None:
    with mlflow.start_run(
        run_name=f"model.latent_dim={latent} model.beta={beta}", tags={"sweep": sweep}
    ) as run:
        mlflow.log_params(
            {
                "model.name": "conv",
                "model.latent_dim": latent,
                "model.beta": beta,
                "train.epochs": 3,
            }
        )
        mlflow.log_metric("val_loss", loss)
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(run.info.run_id, status)


def test_table_and_plot_of_a_sweep(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, "compare.sweep=s1")
    from pipeline import tracking

    tracking.setup(cfg.tracking)
    mlflow.set_experiment(cfg.tracking.experiment)
    for latent in (2, 4):
        for beta in (0.5, 1.0, 2.0):
            log_run(latent, beta, 100 * beta + latent, "s1")
    log_run(8, 1.0, 1.0, "other-sweep")
    log_run(2, 9.0, 1.0, "s1", status="FAILED")
    table = runs_table(cfg)
    assert len(table) == 6 and set(table["model.latent_dim"]) == {"2", "4"}
    assert (
        table.loc[
            (table["model.latent_dim"] == "4") & (table["model.beta"] == "2.0"), "val_loss"
        ].item()
        == 204
    )
    path = plot_metric(table, "model.beta", "val_loss", "model.latent_dim", tmp_path / "plot.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (600, 400)
    with pytest.raises(PipelineError, match="not in the runs table"):
        plot_metric(table, "model.width", "val_loss", None, tmp_path / "x.png")


def test_no_runs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        PipelineError, match="no finished runs in experiment 'lfw-vae' with sweep 'nope'"
    ):
        runs_table(cfg_for(tmp_path, "compare.sweep=nope"))
