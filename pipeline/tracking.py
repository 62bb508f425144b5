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
from pipeline.images import make_grid

log = logging.getLogger(__name__)
T = TypeVar("T")


def tracking_uri(cfg: DictConfig) -> str:
    uri = str(cfg.tracking_uri)
    if uri.startswith("sqlite:///"):  # sqlite:///rel/path or sqlite:////abs/path
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def with_retries(
    fn: Callable[[], T], what: str, tries: int = 8, retry_on: tuple[str, ...] = ("locked",)
) -> T:
    """SQLite allows one writer: concurrent sweep jobs may see 'database is locked'. Back off and
    retry while the error's message holds one of `retry_on` (lower case); raise anything else."""
    for attempt in range(tries):
        try:
            return fn()
        except Exception as err:  # MlflowException / sqlalchemy OperationalError
            if not any(m in str(err).lower() for m in retry_on) or attempt == tries - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def active_run(**kwargs: Any) -> Iterator[mlflow.ActiveRun]:
    """`mlflow.start_run(**kwargs)` as a context, FINISHED or FAILED as MLflow's own, with the
    start and the end retried: under load another writer can hold the SQLite store longer than
    MLflow waits, and a failed `end_run` would leave the run RUNNING for good."""
    run = with_retries(lambda: mlflow.start_run(**kwargs), "start run")
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        if mlflow.active_run() and mlflow.active_run().info.run_id == run.info.run_id:
            with_retries(lambda: mlflow.end_run(status), "end run")


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


EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def setup(cfg: DictConfig) -> str:
    """Point MLflow at the configured store and return the experiment id (created if needed)."""
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        client = MlflowClient()  # the first client in a process creates/migrates the store
        experiment = with_retries(
            lambda: client.get_experiment_by_name(cfg.experiment), "get experiment"
        )
        if experiment is None:
            # a tracking server stores artifacts where its --artifacts-destination says, so that
            # jobs on every machine can write them; a local folder only means something locally
            local = not uri.startswith(("http://", "https://"))
            location = (
                Path(cfg.artifact_location).resolve().as_uri()
                if cfg.artifact_location and local
                else None
            )
            experiment_id = with_retries(
                lambda: client.create_experiment(cfg.experiment, artifact_location=location),
                "create",
            )
            experiment = client.get_experiment(experiment_id)
        if experiment.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
            # MLflow 3's UI opens an untagged experiment as a GenAI workspace (traces, judges);
            # this tag makes it show runs, metrics charts and models as for model training
            with_retries(
                lambda: client.set_experiment_tag(
                    experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING
                ),
                "tag experiment",
            )
        return experiment.experiment_id


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
    """The parent run id of a sweep, created once: by the sweep's callback before any job starts
    (pipeline/sweep.py), else by whichever job gets there first (an O_EXCL marker file).

    Jobs on other machines (a Ray cluster) have no marker in their own sweep folder, so they find
    the parent in the tracking store by its `sweep_dir` tag before they would create one.
    """
    marker = sweep_dir / ".mlflow_parent_run"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        client = MlflowClient()
        found = with_retries(
            lambda: client.search_runs(
                [experiment_id], f"tags.sweep_dir = '{sweep_dir}'", max_results=1
            ),
            "find parent",
        )
        if found:
            return found[0].info.run_id
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
    tags = {"sweep": name, "sweep_dir": str(sweep_dir), "sweep_parent": "true"}
    run = with_retries(lambda: client.create_run(experiment_id, run_name=name, tags=tags), "parent")
    # RUNNING while its jobs run: the sweep callback ends it after the last one (pipeline/sweep.py)
    with os.fdopen(fd, "w") as fh:
        fh.write(run.info.run_id)
    return run.info.run_id


def log_image_step(images: np.ndarray, key: str, step: int, rows: int | None = None) -> None:
    """A grid of faces as an MLflow image under `key` at `step`: the UI's chart view shows it per
    step (a slider) and side by side across runs, unlike a plain artifact."""
    grid = make_grid(images, rows=rows)
    with_retries(lambda: mlflow.log_image(grid, key=key, step=step), f"image {key}")


def log_dataset(images: np.ndarray, digest: str, source: str, context: str) -> None:
    """The prepared faces as the run's MLflow dataset input (the runs table's Dataset column):
    named after the file, with the prepared file's digest, so runs on the same data group."""
    dataset = mlflow.data.from_numpy(
        images, source=source, name=Path(source).name, digest=digest[:16]
    )
    # MLflow gets or creates the dataset row in two steps: two sweep jobs logging the same data at
    # once can both try to create it, and the loser sees a UNIQUE constraint failure; on retry the
    # row exists and is reused
    with_retries(
        lambda: mlflow.log_input(dataset, context=context),
        "dataset input",
        retry_on=("locked", "unique constraint failed"),
    )


def image_steps(run_id: str) -> dict[str, list[int]]:
    """The steps at which each image key was logged (`log_image(key=, step=)`), read back through
    the client from the file names MLflow gives them: images/<key>+step+<n>+timestamp+...png."""
    found: dict[str, list[int]] = {}
    for item in MlflowClient().list_artifacts(run_id, "images"):
        name = Path(item.path).name
        if name.endswith(".png") and "+step+" in name:
            key, rest = name.removesuffix(".png").split("+step+", 1)
            found.setdefault(key.replace("~", "/"), []).append(int(rest.split("+", 1)[0]))
    return {key: sorted(steps) for key, steps in found.items()}


def logged_steps(run_id: str, metric: str) -> set[int]:
    return {m.step for m in MlflowClient().get_metric_history(run_id, metric)}


def run_name_from_hydra(cfg: DictConfig) -> str:
    """A run's name: the job's Hydra overrides (what tells sweep jobs apart), else a summary."""
    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:
        overrides = []
    # what shapes the model; where runs are stored and how they are judged afterwards do not
    skip = ("hydra.", "hydra/", "tracking.", "paths.", "evaluate.", "generate.", "compare.")
    overrides = [o for o in overrides if not o.lstrip("+~").startswith(skip)]
    return (
        " ".join(overrides)
        or f"{cfg.model.name} z{cfg.model.latent_dim} β{cfg.model.beta} e{cfg.train.epochs}"
    )
