"""MLflow: where runs live, how they are named, grouped and tagged, and how pictures and models get in.

The store is SQLite under mlruns/ with artifacts beside it (MLflow 3 refuses its old file store);
`tracking.tracking_uri` points it at a server instead. Sweep jobs share one parent run per sweep
folder, so the MLflow UI shows a sweep as one expandable group of comparable runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import numpy as np
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from pipeline.config import flatten
from pipeline.errors import PipelineError
from pipeline.images import save_grid

log = logging.getLogger(__name__)
T = TypeVar("T")


def tracking_uri(cfg: DictConfig) -> str:
    uri = str(cfg.tracking_uri)
    if uri.startswith("sqlite:///"):  # sqlite:///rel/path or sqlite:////abs/path
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def with_retries(fn: Callable[[], T], what: str, tries: int = 8) -> T:
    """SQLite allows one writer: concurrent sweep jobs may see 'database is locked'. Back off and retry."""
    for attempt in range(tries):
        try:
            return fn()
        except Exception as err:  # MlflowException / sqlalchemy OperationalError
            if "locked" not in str(err).lower() or attempt == tries - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a SQLite store: MLflow creates and migrates its schema on first use,
    and several sweep jobs starting at once would otherwise race in that migration."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def setup(cfg: DictConfig) -> str:
    """Point MLflow at the configured store and return the experiment id (created if needed)."""
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        client = MlflowClient()  # the first client in a process creates/migrates the store
        experiment = with_retries(
            lambda: client.get_experiment_by_name(cfg.experiment), "get experiment"
        )
        if experiment is not None:
            return experiment.experiment_id
        location = Path(cfg.artifact_location).resolve().as_uri() if cfg.artifact_location else None
        return with_retries(
            lambda: client.create_experiment(cfg.experiment, artifact_location=location), "create"
        )


def params(cfg: DictConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """The config groups `keys` as flat MLflow params ("model.latent_dim": 128, ...)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    flat = flatten({key: container.get(key, {}) for key in keys})
    return {k: v for k, v in flat.items() if v != {}}  # an empty mapping is no parameter


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sweep_parent(experiment_id: str, sweep_dir: Path, name: str) -> str:
    """The parent run id of a sweep, created once by whichever job gets there first (O_EXCL file)."""
    marker = sweep_dir / ".mlflow_parent_run"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        for _ in range(100):  # the creator writes the id right after creating the file
            text = marker.read_text().strip()
            if text:
                return text
            time.sleep(0.1)
        raise PipelineError(f"{marker} stayed empty: delete it and rerun the sweep") from None
    client = MlflowClient()
    run = with_retries(
        lambda: client.create_run(experiment_id, run_name=name, tags={"sweep": name}), "parent"
    )
    client.set_terminated(run.info.run_id)  # a grouping node, not a job: it has nothing to wait for
    with os.fdopen(fd, "w") as fh:
        fh.write(run.info.run_id)
    return run.info.run_id


def log_grid(images: np.ndarray, artifact_file: str, rows: int | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = save_grid(images, Path(tmp) / Path(artifact_file).name, rows=rows)
        folder = str(Path(artifact_file).parent)
        with_retries(
            lambda: mlflow.log_artifact(str(path), None if folder == "." else folder), "artifact"
        )


def logged_steps(run_id: str, metric: str) -> set[int]:
    return {m.step for m in MlflowClient().get_metric_history(run_id, metric)}


def run_name_from_hydra(cfg: DictConfig) -> str:
    """A run's name: the job's Hydra overrides (what tells sweep jobs apart), else a summary."""
    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:
        overrides = []
    overrides = [o for o in overrides if not o.startswith(("hydra.", "tracking.", "paths."))]
    return (
        " ".join(overrides)
        or f"{cfg.model.name} z{cfg.model.latent_dim} β{cfg.model.beta} e{cfg.train.epochs}"
    )
