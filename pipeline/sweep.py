"""Hydra callbacks that make a `--multirun` one MLflow sweep, whichever launcher runs its jobs.

Before any job starts, the sweep's parent run is created in the launching process, so jobs on
other machines (Ray workers) attach to it through the tracking store (`tracking.sweep_parent`).
When every job has returned, the parent gets the comparison of its jobs: `comparison/runs.csv`
(params and held-out metrics, best first) and the `compare.y` vs `compare.x` plot.

Each job that trained is evaluated here too, after its task has returned (`on_job_end`, in the
job's own process, on whichever machine ran it), so a sweep's runs compare on held-out quality
while the training code never imports the evaluation: DVC's `train` stage does not depend on it.
`evaluate.after_training` (auto = sweep jobs only) says when; its config is checked before any
job starts.

Configured once in conf/config.yaml (`hydra.callbacks.sweep`).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
import mlflow
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline import tracking
from pipeline.errors import PipelineError
from pipeline.runs import write_comparison

log = logging.getLogger(__name__)


def _sweep(config: DictConfig) -> tuple[Path, str]:
    sweep_dir = Path(str(config.hydra.sweep.dir))
    return sweep_dir, sweep_dir.name


def _evaluates(config: DictConfig) -> bool:
    from pipeline.evaluation import evaluate_after_training, validate_evaluate_config

    in_sweep = config.hydra.mode == RunMode.MULTIRUN
    if config.hydra.job.name != "train" or not evaluate_after_training(config, in_sweep):
        return False
    validate_evaluate_config(config.evaluate)
    return True


def _stop(err: PipelineError) -> None:
    """As a stage's main does (errors.exit_on_pipeline_error): one line, exit status 1."""
    log.error("%s", err)
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(1) from None


class SweepRuns(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # a bad evaluate.* value stops the job before it trains, not after
            _evaluates(config)
        except PipelineError as err:
            _stop(err)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        from pipeline.artifacts import load_local
        from pipeline.dataset import load_faces
        from pipeline.evaluation import evaluate_into_run

        if job_return.status != JobStatus.COMPLETED or not _evaluates(config):
            return
        try:
            if config.hydra.mode == RunMode.MULTIRUN:  # where pipeline.train put this job's models
                root = Path(config.hydra.runtime.output_dir)
                models, reports = root / "models", root / "reports"
            else:
                models = Path(hydra.utils.to_absolute_path(config.paths.models))
                reports = Path(hydra.utils.to_absolute_path(config.paths.reports))
            tracking.setup(config.tracking)
            faces = load_faces(
                Path(hydra.utils.to_absolute_path(config.paths.prepared)) / "faces.npz"
            )
            evaluate_into_run(config, load_local(models), faces, reports / "evaluation")
        except PipelineError as err:
            _stop(err)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            _evaluates(config)
        except PipelineError as err:
            _stop(err)
        experiment_id = tracking.setup(config.tracking)
        sweep_dir, name = _sweep(config)
        parent = tracking.sweep_parent(experiment_id, sweep_dir, name)
        log.info("sweep %s: MLflow parent run %s (%s)", name, parent, config.tracking.tracking_uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        experiment_id = tracking.setup(config.tracking)
        sweep_dir, name = _sweep(config)
        parent = tracking.sweep_parent(experiment_id, sweep_dir, name)
        cfg = OmegaConf.merge(config, {"compare": {"sweep": name}})
        client = mlflow.MlflowClient()
        try:
            self.log_comparison(cfg, client, parent, name)
        finally:  # the parent's duration is the sweep's: it ends when its last job has
            tracking.with_retries(lambda: client.set_terminated(parent), "end sweep")

    @staticmethod
    def log_comparison(
        cfg: DictConfig, client: mlflow.MlflowClient, parent: str, name: str
    ) -> None:
        with tempfile.TemporaryDirectory(prefix="comparison-") as tmp:
            try:
                table, _, plot = write_comparison(cfg, Path(tmp))
            except PipelineError as err:  # e.g. every job failed: nothing to compare
                log.warning("sweep %s: no comparison logged (%s)", name, err)
                return
            tracking.with_retries(
                lambda: client.log_artifacts(parent, tmp, "comparison"), "comparison"
            )
        log.info(
            "sweep %s: %d finished runs compared into run %s (comparison/runs.csv, %s)",
            name,
            len(table),
            parent,
            plot.name,
        )
