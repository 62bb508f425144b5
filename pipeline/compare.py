"""compare: a table of runs (params + key metrics) from the tracking store, and a metric-vs-param plot.

    python -m pipeline.compare                                   # every finished run of the experiment
    python -m pipeline.compare compare.sweep=<sweep name>        # one sweep (the tag on its runs)
    python -m pipeline.compare compare.y=test_fid compare.x=model.beta compare.group=model.latent_dim

Writes reports/compare/runs.csv and reports/compare/<y>_vs_<x>.png, and prints the table.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import hydra
import mlflow
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline import tracking
from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.errors import PipelineError, exit_on_pipeline_error

log = logging.getLogger(__name__)


def runs_table(cfg: DictConfig) -> pd.DataFrame:
    """One row per finished training run: its run id and name, the chosen params and metrics."""
    experiment_id = tracking.setup(cfg.tracking)
    query = "attributes.status = 'FINISHED' and params.`model.name` != ''"
    if cfg.compare.sweep:
        query += f" and tags.sweep = '{cfg.compare.sweep}'"
    runs = mlflow.search_runs(
        [experiment_id], filter_string=query, order_by=["attributes.start_time ASC"]
    )
    if runs.empty:
        raise PipelineError(
            f"no finished runs in experiment {cfg.tracking.experiment!r}"
            + (f" with sweep {cfg.compare.sweep!r}" if cfg.compare.sweep else "")
        )
    columns = {"run_id": "run_id", "tags.mlflow.runName": "run"}
    columns |= {f"params.{p}": p for p in cfg.compare.params}
    columns |= {f"metrics.{m}": m for m in cfg.compare.metrics}
    present = {k: v for k, v in columns.items() if k in runs.columns}
    return runs[list(present)].rename(columns=present)


def plot_metric(table: pd.DataFrame, x: str, y: str, group: str | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    missing = [c for c in (x, y, group) if c and c not in table.columns]
    if missing:
        raise PipelineError(f"{missing} not in the runs table; columns: {', '.join(table.columns)}")
    data = table.dropna(subset=[y]).copy()
    # params are stored as text; numbers plot on a numeric axis
    with contextlib.suppress(ValueError):
        data[x] = pd.to_numeric(data[x])
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, part in data.groupby(group) if group else [(None, data)]:
        part = part.sort_values(x)
        ax.plot(part[x], part[y], marker="o", label=f"{group}={label}" if group else None)
    ax.set(xlabel=x, ylabel=y, title=f"{y} vs {x}")
    if group:
        ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_pipeline_error
def main(cfg: DictConfig) -> None:
    log.info("compare config:\n%s", OmegaConf.to_yaml(cfg.compare))
    table = runs_table(cfg)
    out = Path(hydra.utils.to_absolute_path(cfg.paths.reports)) / "compare"
    write_text_atomic(out / "runs.csv", table.to_csv(index=False))
    plot = plot_metric(
        table,
        cfg.compare.x,
        cfg.compare.y,
        cfg.compare.group,
        out / f"{cfg.compare.y}_vs_{cfg.compare.x}.png",
    )
    print(table.drop(columns=["run_id"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nwrote {out / 'runs.csv'} and {plot}")


if __name__ == "__main__":
    main()
