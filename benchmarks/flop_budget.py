"""Does a configuration fit issue 20's compute budget? Training FLOPs of one whole run, counted.

    python benchmarks/flop_budget.py model.adversarial_weight=100 train.adversarial_start_epoch=30
    python benchmarks/flop_budget.py train.epochs=65 model.adversarial_weight=100 \
        train.adversarial_start_epoch=45

Issue 20 allows at most twice the plain σ-VAE's training FLOPs per image (0.654 GFLOP per image
and step: the default network without the LPIPS term or a critic) and lists longer schedules
among the levers "within the FLOP budget", so the budget bounds the whole run: what a run costs
per training image, summed over its epochs, against the plain σ-VAE's 50 epochs (the design
baseline). The overrides are the ones `pipeline.train` takes; the counts are
`pipeline.flops.run_flops`'s (the convolutions and dense layers; a backward pass ≈ twice the
forward). Nothing is trained. Prints one table; `--json` writes the figures too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# what the issue calls "today": the default network with neither a perceptual term nor a critic
BASELINE = ["model.perceptual_weight=0", "model.adversarial_weight=0"]
BUDGET = 2.0


def budget(overrides: list[str]) -> dict[str, float]:
    """The run's figures (pipeline.flops.run_flops) beside the baseline's, and their ratio."""
    from omegaconf import OmegaConf

    from pipeline.config import compose_config
    from pipeline.flops import run_flops
    from pipeline.model_config import validate_model_config

    cfg = compose_config(overrides)
    size = int(cfg.data.prepare.size)
    # the networks' shapes, checked as training checks them; counting needs no LPIPS weights file
    validate_model_config(OmegaConf.merge(cfg.model, {"perceptual_weight": 0}), size)
    run = run_flops(cfg, size)
    base = run_flops(compose_config(BASELINE), size)
    run["baseline_step_gflop"] = base["step_gflop"]
    run["baseline_run_gflop"] = base["run_gflop"]
    run["ratio"] = run["run_gflop"] / base["run_gflop"]
    run["within_budget"] = run["ratio"] <= BUDGET
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as pipeline.train takes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.errors import PipelineError

    try:
        figures = budget(args.overrides)
    except (HydraException, OmegaConfBaseException, PipelineError) as error:
        sys.exit(f"flop_budget: {error}")  # Hydra's or the model check's message names the key
    b = figures
    print(f"{'':32} {'GFLOP/img':>10}")
    print(f"{'step, before the critic':32} {b['step_gflop']:10.3f}")
    print(f"{'step, while the critic trains':32} {b['critic_step_gflop']:10.3f}")
    print(
        f"{'whole run':32} {b['run_gflop']:10.2f}  ({b['epochs']} epochs, "
        f"the critic in the last {b['critic_epochs']})"
    )
    print(f"{'baseline run (plain σ-VAE)':32} {b['baseline_run_gflop']:10.2f}  (50 epochs)")
    verdict = "within" if b["within_budget"] else "OVER"
    print(f"ratio {b['ratio']:.3f}× the baseline: {verdict} issue 20's {BUDGET:g}×")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
