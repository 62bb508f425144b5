"""Runs of the tracking store as a table (params + key metrics) and a metric-vs-param plot: what
`compare` prints and what a sweep's parent run gets when the sweep ends (pipeline/sweep.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import mlflow
import pandas as pd
from omegaconf import DictConfig

from pipeline import tracking
from pipeline.atomic import atomic_path
from pipeline.errors import PipelineError


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


def write_comparison(cfg: DictConfig, out: Path) -> tuple[pd.DataFrame, Path, Path]:
    """runs.csv and the `compare.y` vs `compare.x` plot (one line per `compare.group`) in `out`.

    Sorted by `compare.y` (best first: every default metric is lower-is-better). When no run
    has `compare.y` (e.g. test_fid before any run was evaluated) the plot falls back to val_loss.
    """
    table = runs_table(cfg)
    y = cfg.compare.y
    if y not in table.columns or table[y].isna().all():
        y = "val_loss"
    table = table.sort_values(y, na_position="last") if y in table.columns else table
    csv = out / "runs.csv"
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    plot = plot_metric(
        table, cfg.compare.x, y, cfg.compare.group, out / f"{y}_vs_{cfg.compare.x}.png"
    )
    return table, csv, plot
