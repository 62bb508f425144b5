"""evaluate stage: held-out metrics and pictures for a trained VAE, written for DVC and MLflow alike.

    python -m pipeline.evaluate                          # the models/ of the last `train` (DVC stage)
    python -m pipeline.evaluate evaluate.run_id=<id>     # any MLflow run, logged back into that run

Everything is computed on the test split, which training and model selection never see. Metric
definitions are in the README; metrics.py holds the formulas.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.artifacts import load_local, load_run, require_run
from pipeline.atomic import write_text_atomic
from pipeline.dataset import load_faces
from pipeline.errors import exit_on_pipeline_error
from pipeline.evaluation import evaluate_into_run

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_pipeline_error
def main(cfg: DictConfig) -> dict:
    log.info("evaluate config:\n%s", OmegaConf.to_yaml(cfg.evaluate))
    path = hydra.utils.to_absolute_path
    faces = load_faces(Path(path(cfg.paths.prepared)) / "faces.npz")
    if cfg.evaluate.run_id:
        vae = load_run(cfg.evaluate.run_id, cfg.tracking)
    else:
        vae = load_local(Path(path(cfg.paths.models)))
        require_run(vae.card["run_id"], cfg.tracking, "named in models/vae.json")
    reports = None if cfg.evaluate.run_id else Path(path(cfg.paths.reports))
    # every output appears only once everything it needs has succeeded, MLflow included
    result = evaluate_into_run(cfg, vae, faces, reports / "evaluation" if reports else None)
    if reports is not None:  # the DVC stage's outputs
        write_text_atomic(reports / "metrics.json", json.dumps(result, indent=2) + "\n")
    log.info(
        "test metrics: %s",
        {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()},
    )
    return result


if __name__ == "__main__":
    main()
