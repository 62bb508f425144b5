from pathlib import Path

import mlflow
import pytest

from pipeline import tracking
from pipeline.config import compose_config


def test_retries_only_database_locked() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking.with_retries(flaky, "test") == "ok" and len(calls) == 3
    with pytest.raises(ValueError, match="other"):
        tracking.with_retries(lambda: (_ for _ in ()).throw(ValueError("other")), "test")


def test_a_lost_dataset_insert_race_is_retried_only_where_asked() -> None:
    # two sweep jobs logging the same data at once: the loser's insert of the dataset row fails
    race = "BAD_REQUEST: (sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id"
    calls = []

    def racing() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise RuntimeError(race)
        return "ok"

    with pytest.raises(RuntimeError, match="UNIQUE constraint failed"):
        tracking.with_retries(racing, "test")  # elsewhere a constraint failure is a real error
    retry_on = ("locked", "unique constraint failed")
    assert tracking.with_retries(racing, "test", retry_on=retry_on) == "ok" and len(calls) == 2


def store_cfg(tmp_path: Path):
    """conf/ with an MLflow store inside tmp_path."""
    return compose_config(
        [
            f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"tracking.artifact_location={tmp_path}/artifacts",
        ]
    )


def test_sweep_parent_is_created_once(tmp_path: Path) -> None:
    cfg = store_cfg(tmp_path)
    experiment = tracking.setup(cfg.tracking)
    first = tracking.sweep_parent(experiment, tmp_path / "sweep", "sweep-1")
    assert tracking.sweep_parent(experiment, tmp_path / "sweep", "sweep-1") == first
    parent = mlflow.MlflowClient().get_run(first)
    # running until the sweep callback ends it after the last job (tests/test_sweep.py)
    assert parent.data.tags["sweep"] == "sweep-1" and parent.info.status == "RUNNING"


def test_params_are_flat_dotted_keys() -> None:
    cfg = compose_config(["model=seed"])
    flat = tracking.params(cfg, ("model", "train"))
    assert (
        flat["model.name"] == "seed"
        and flat["train.batch_size"] == 64
        and "data.attributes" not in flat
    )


def test_a_job_on_another_machine_finds_the_parent_through_the_store(tmp_path: Path) -> None:
    """A Ray worker has no marker file in its own sweep folder: it must not make a second parent."""
    cfg = store_cfg(tmp_path)
    experiment = tracking.setup(cfg.tracking)
    first = tracking.sweep_parent(experiment, tmp_path / "sweep", "sweep")
    (tmp_path / "sweep" / ".mlflow_parent_run").unlink()  # as seen from another machine
    assert tracking.sweep_parent(experiment, tmp_path / "sweep", "sweep") == first
    # a different sweep folder is a different sweep
    assert tracking.sweep_parent(experiment, tmp_path / "other" / "sweep", "sweep") != first


def test_the_experiment_is_marked_as_model_training(tmp_path: Path) -> None:
    cfg = store_cfg(tmp_path)
    experiment = tracking.setup(cfg.tracking)
    client = mlflow.MlflowClient()
    tags = client.get_experiment(experiment).tags
    assert tags[tracking.EXPERIMENT_KIND] == "custom_model_development"
    # an experiment made before the tag existed (or tagged otherwise) is re-marked on next use
    client.set_experiment_tag(experiment, tracking.EXPERIMENT_KIND, "genai_development")
    assert tracking.setup(cfg.tracking) == experiment
    assert client.get_experiment(experiment).tags[tracking.EXPERIMENT_KIND] == (
        "custom_model_development"
    )


def test_image_keys_and_steps_read_back_through_the_client(tmp_path: Path) -> None:
    import numpy as np

    cfg = store_cfg(tmp_path)
    experiment = tracking.setup(cfg.tracking)
    faces = np.random.default_rng(0).random((5, 8, 8, 3)).astype("float32")
    with mlflow.start_run(experiment_id=experiment) as run:
        for step in (3, 1, 2):
            tracking.log_image_step(faces, "samples", step)
        tracking.log_image_step(faces, "val/reconstructions", 7, rows=1)
    assert tracking.image_steps(run.info.run_id) == {
        "samples": [1, 2, 3],
        "val/reconstructions": [7],
    }


def test_a_run_ends_even_when_the_store_is_locked_at_that_moment(tmp_path: Path) -> None:
    """The end of a run is retried: a store locked longer than MLflow waits (another sweep job's
    write on a busy machine) must not leave the run RUNNING for good, nor fail the training."""
    from mlflow.exceptions import MlflowException

    cfg = store_cfg(tmp_path)
    experiment = tracking.setup(cfg.tracking)
    real_end, calls = mlflow.end_run, []

    def locked_once(status: str = "FINISHED") -> None:
        calls.append(status)
        if len(calls) == 1:  # what SQLAlchemy raises through MLflow when the wait runs out
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        real_end(status)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mlflow, "end_run", locked_once)
        with tracking.active_run(experiment_id=experiment) as run:
            mlflow.log_metric("m", 1.0)
    assert calls == ["FINISHED", "FINISHED"]
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"
    with (
        pytest.raises(ValueError, match="boom"),
        tracking.active_run(experiment_id=experiment) as failed,
    ):
        raise ValueError("boom")
    assert mlflow.MlflowClient().get_run(failed.info.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None
