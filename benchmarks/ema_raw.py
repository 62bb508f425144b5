"""The last raw weights of a `train.ema` run, as a run of their own: EMA against no EMA, one trajectory.

    python benchmarks/ema_raw.py models/ema-critic100-s42 models/ema-critic100-s42-raw <overrides>
    python -m pipeline.train <overrides> paths.models=models/ema-critic100-s42-raw paths.reports=…
    python -m pipeline.evaluate <the same>

A checkpoint is written at each epoch's end, before fit() writes the weight average into the
weights, so a finished EMA run's last checkpoint still holds the raw weights beside their average.
This copies that checkpoint into a new models folder with the average set to the raw weights and
a new MLflow run: `pipeline.train` with the run's own overrides then finds every epoch done,
"writes the average" (now the raw weights) and saves the model and its sampler into a new MLflow
run that carries the EMA run's params. Both models come from the same updates, so what differs
between them is only the average.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def raw_run(cfg: DictConfig, source_run_id: str | None) -> str:
    """A new MLflow run, not yet finished (so `pipeline.train` resumes into it, logs the epochs and
    saves the model there), with the source run's params and tags."""
    import mlflow
    from mlflow.entities import Param, RunTag

    from pipeline import tracking

    experiment_id = tracking.setup(cfg.tracking)
    client = mlflow.MlflowClient()
    try:
        source = client.get_run(source_run_id) if source_run_id else None
    except mlflow.exceptions.MlflowException:
        raise SystemExit(
            f"the EMA run {source_run_id} is not in {cfg.tracking.tracking_uri}: pass the"
            " tracking.* overrides the run was trained with"
        ) from None
    tags = dict(source.data.tags) if source else {}
    name = f"{tags.get('mlflow.runName', 'ema')}-raw-weights"
    tags = {k: v for k, v in tags.items() if not k.startswith("mlflow.")}
    tags["ema_raw_weights_of"] = source_run_id or ""
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    if source:
        params = [Param(k, v) for k, v in source.data.params.items()]
        client.log_batch(run.info.run_id, params=params, tags=[RunTag("source", "ema_raw.py")])
    return run.info.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the EMA run's models folder")
    parser.add_argument("out", type=Path, help="a new models folder (must not exist)")
    parser.add_argument("overrides", nargs="*", help="the EMA run's training overrides")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: name a new folder")
    found = [d for d in (args.source / "checkpoints").glob("*") if d.is_dir()]
    if len(found) != 1:
        raise SystemExit(
            f"{args.source}/checkpoints holds {len(found)} checkpoints, not one: name the folder"
            " of the one EMA run (its own paths.models)"
        )
    [ckpt_dir] = found

    import pipeline  # noqa: F401  (TensorFlow's settings before Keras loads)
    from pipeline.checkpoint import Checkpoint
    from pipeline.config import compose_config
    from pipeline.model import compiled_vae
    from pipeline.schema import validate_train_config

    image_size = int(json.loads((args.source / "vae.json").read_text())["image_size"])
    cfg = validate_train_config(compose_config(args.overrides), image_size)
    if not cfg.train.ema:
        raise SystemExit("the overrides train without train.ema: this needs the EMA run's own")
    vae = compiled_vae(cfg, image_size)
    ckpt = Checkpoint.load(ckpt_dir)
    if ckpt is None or ckpt.epoch < cfg.train.epochs:
        raise SystemExit(f"{ckpt_dir} is not a finished run's checkpoint")
    ckpt.restore(vae)
    opt = vae.optimizer
    for average, weight in zip(
        opt._model_variables_moving_average, opt._trainable_variables, strict=True
    ):
        average.assign(weight)
    ckpt.folder = args.out / "checkpoints" / ckpt_dir.name
    ckpt.run_id = raw_run(cfg, ckpt.run_id)
    ckpt.save(vae)
    print(f"wrote {ckpt.folder}: epoch {ckpt.epoch} of {ckpt_dir}, the average set to the weights")


if __name__ == "__main__":
    main()
