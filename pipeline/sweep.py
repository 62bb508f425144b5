"""Hydra callbacks that make a `--multirun` one MLflow sweep, whichever launcher runs its jobs.

Before any job starts, the sweep's parent run is created in the launching process, so jobs on
other machines (Ray workers) attach to it through the tracking store (`tracking.sweep_parent`).
When every job has returned, the parent gets the comparison of its jobs: `comparison/runs.csv`
(params and held-out metrics, best first) and the `compare.y` vs `compare.x` plot.

Configured once in conf/config.yaml (`hydra.callbacks.sweep`); single runs never call these.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline import tracking
from pipeline.errors import PipelineError
from pipeline.runs import write_comparison

log = logging.getLogger(__name__)


def _sweep(config: DictConfig) -> tuple[Path, str]:
    sweep_dir = Path(str(config.hydra.sweep.dir))
    return sweep_dir, sweep_dir.name


class SweepRuns(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
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
