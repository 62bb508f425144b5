"""One source of truth for configuration: conf/ (Hydra). params.yaml is its composed mirror.

DVC reads parameters from params.yaml, and `dvc exp run -S key=value` recomposes conf/ with Hydra
into params.yaml before it runs (hydra.enabled in .dvc/config). The DVC stages run the entry points
with `--config-dir . --config-name params`, so `dvc repro`, `dvc exp run` and a direct
`python -m pipeline.train ...` all read the same values. After editing conf/, refresh the mirror:

    python -m pipeline.config        # rewrites params.yaml; tests/test_config.py fails on drift
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
PARAMS_FILE = REPO_ROOT / "params.yaml"


def compose_config(overrides: list[str] | None = None, conf_dir: Path = CONF_DIR) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides, outside any Hydra app (tests, notebooks)."""
    with initialize_config_dir(str(conf_dir), version_base=None):
        cfg = compose(config_name="config", overrides=overrides or [])
    OmegaConf.resolve(cfg)
    return cfg


def write_params(
    output: Path = PARAMS_FILE, conf_dir: Path = CONF_DIR, overrides: list[str] | None = None
) -> None:
    """Write the composed config exactly as DVC's own Hydra composition would."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(output, str(conf_dir), None, "config", str(REPO_ROOT), overrides or [])


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; an empty mapping stays a value of its own."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def params_drift(params_file: Path = PARAMS_FILE, conf_dir: Path = CONF_DIR) -> dict:
    """Keys whose values differ between params.yaml and the composed conf/ (empty when in sync)."""
    composed = OmegaConf.to_container(compose_config(conf_dir=conf_dir))
    written = (
        yaml.safe_load(params_file.read_text(encoding="utf-8")) if params_file.exists() else {}
    )
    a, b = flatten(composed), flatten(written or {})
    return {k: (b.get(k), a.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides baked into params.yaml")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if params.yaml differs from conf/"
    )
    args = parser.parse_args()
    if args.check:
        drift = params_drift()
        for key, (written, composed) in drift.items():
            print(f"{key}: params.yaml has {written!r}, conf/ composes {composed!r}")
        raise SystemExit(1 if drift else 0)
    write_params(overrides=args.overrides)
    print(f"wrote {PARAMS_FILE}")


if __name__ == "__main__":
    main()
