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


def test_sweep_parent_is_created_once(tmp_path: Path) -> None:
    cfg = compose_config(
        [
            f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"tracking.artifact_location={tmp_path}/artifacts",
        ]
    )
    experiment = tracking.setup(cfg.tracking)
    first = tracking.sweep_parent(experiment, tmp_path / "sweep", "sweep-1")
    assert tracking.sweep_parent(experiment, tmp_path / "sweep", "sweep-1") == first
    parent = mlflow.MlflowClient().get_run(first)
    assert parent.data.tags["sweep"] == "sweep-1" and parent.info.status == "FINISHED"


def test_params_are_flat_dotted_keys() -> None:
    cfg = compose_config(["model=seed"])
    flat = tracking.params(cfg, ("model", "train"))
    assert (
        flat["model.name"] == "seed"
        and flat["train.batch_size"] == 64
        and "data.attributes" not in flat
    )
