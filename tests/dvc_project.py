"""Build a throwaway copy of this project (git + DVC) whose data comes from a local server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from pipeline.config import REPO_ROOT, write_params


def make_project(dest: Path, settings: list[str], attributes_url: str) -> Path:
    """A git+DVC copy of the project whose conf/config.yaml also carries `settings` (key=value).

    The settings go into conf/ itself (after `_self_`, so they win over the groups), which keeps
    params.yaml the composed conf/ there too and lets `dvc exp run` recompose it.
    """
    for name in ("pipeline", "conf"):
        shutil.copytree(REPO_ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO_ROOT / name, dest / name)
    config = dest / "conf" / "config.yaml"
    merged = OmegaConf.merge(OmegaConf.load(config), OmegaConf.from_dotlist(settings))
    config.write_text(OmegaConf.to_yaml(merged))
    record = yaml.safe_load((REPO_ROOT / "data.dvc").read_text())
    record["deps"][0]["path"] = attributes_url
    (dest / "data.dvc").write_text(yaml.safe_dump(record))
    write_params(dest / "params.yaml", dest / "conf")
    (dest / "mlruns").mkdir(exist_ok=True)
    run(["git", "init", "-q"], dest)
    run(["dvc", "init", "-q"], dest)
    run(["dvc", "config", "core.analytics", "false"], dest)
    run(["dvc", "config", "hydra.enabled", "true"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], dest)
    return dest


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e["DVC_NO_ANALYTICS"] = "1"
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return e


def run(
    cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc
