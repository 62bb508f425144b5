"""compare: a table of runs (params + key metrics) from the tracking store, and a metric-vs-param plot.

    python -m pipeline.compare                                   # every finished run of the experiment
    python -m pipeline.compare compare.sweep=<sweep name>        # one sweep (the tag on its runs)
    python -m pipeline.compare compare.y=test_fid compare.x=model.beta compare.group=model.latent_dim

Writes reports/compare/runs.csv and reports/compare/<y>_vs_<x>.png, and prints the table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.errors import exit_on_pipeline_error
from pipeline.runs import write_comparison

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_pipeline_error
def main(cfg: DictConfig) -> None:
    log.info("compare config:\n%s", OmegaConf.to_yaml(cfg.compare))
    out = Path(hydra.utils.to_absolute_path(cfg.paths.reports)) / "compare"
    table, csv, plot = write_comparison(cfg, out)
    print(table.drop(columns=["run_id"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nwrote {csv} and {plot}")


if __name__ == "__main__":
    main()
