"""download stage: get the LFW deep-funneled images from the first source that yields verified data.

Sources are tried in order (conf/data/lfw.yaml `data.download.sources`): Google Drive (via gdown,
which confirms Drive's "can't scan for viruses" page), any http(s) mirror (resumable), Kaggle
(when credentials exist), or a local archive / extracted folder (path or file:// URL).

Archives are kept in data/downloads/ (outside DVC's outputs, which DVC deletes before a stage runs)
so an interrupted download resumes and a finished one is never fetched twice. The images land in
data/raw/lfw-deepfunneled/ only after the layout, the count and (optionally) a content digest check
out; the digest covers file names and bytes, so it is the same whichever archive they came from.

lfw_attributes.txt is not fetched here: data.dvc imports it with DVC's own `import-url` record.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.archive import safe_extract
from pipeline.atomic import atomic_dir, write_text_atomic
from pipeline.checksums import content_digest, file_sha256
from pipeline.errors import DownloadError, exit_on_pipeline_error
from pipeline.fetch import DownloadSettings, fetch
from pipeline.lfw import IMAGE_NAME, IMAGES_DIRNAME, recorded_source

log = logging.getLogger(__name__)

CHUNK = 1 << 20


# --------------------------------------------------------------------------- verification


def find_image_root(folder: Path) -> Path:
    """The folder whose children are the per-person folders (Kaggle nests it one level deeper)."""
    roots = {p.parent.parent for p in folder.rglob("*.jpg")}
    if not roots:
        raise DownloadError(f"{folder} holds no .jpg files: not an LFW archive")
    if len(roots) > 1:
        shown = ", ".join(str(r.relative_to(folder)) for r in sorted(roots)[:3])
        raise DownloadError(
            f"{folder}: images at more than one depth ({shown}); expected <Person>/<Person>_NNNN.jpg"
        )
    return roots.pop()


def verify_images(root: Path, expected_images: int | None, expected_digest: str | None) -> dict:
    """Check the LFW layout, the image count and (if pinned) the content digest. Returns a summary."""
    relpaths = []
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(root).as_posix()
        if not IMAGE_NAME.match(rel):
            raise DownloadError(
                f"{root}: unexpected file {rel!r}; LFW holds only <Person>/<Person>_NNNN.jpg"
            )
        relpaths.append(rel)
    if expected_images and len(relpaths) != expected_images:
        raise DownloadError(
            f"{root} holds {len(relpaths)} images, expected {expected_images} "
            "(incomplete archive? or set data.download.expected_images for a different subset)"
        )
    digest = content_digest(root, relpaths)
    if expected_digest and digest != expected_digest:
        raise DownloadError(
            f"{root}: image content digest {digest} differs from data.download.content_sha256 {expected_digest}"
        )
    people = {rel.split("/", 1)[0] for rel in relpaths}
    return {"images": len(relpaths), "people": len(people), "content_sha256": digest}


# --------------------------------------------------------------------------- the stage


def materialise(
    source: str,
    downloads: Path,
    out_dir: Path,
    archive_sha256: dict,
    settings: DownloadSettings,
    expected_images: int | None,
    expected_digest: str | None,
) -> dict:
    """Fetch one source and move its verified images to `out_dir`. Raises DownloadError.

    An archive in the download cache that fails any check (checksum, archive format, layout, count,
    digest) is removed, so a rerun fetches it again instead of reusing it; a local archive is never
    touched. A failure of this machine while unpacking (disk full, file-size limit, permissions)
    keeps the archive: nothing is wrong with it.
    """
    got = fetch(source, downloads, settings)
    cached = got.is_file() and got.is_relative_to(downloads)
    try:
        with atomic_dir(out_dir) as staging:
            if got.is_dir():
                root = find_image_root(got)
                shutil.copytree(root, staging, dirs_exist_ok=True)
            else:
                check_pinned_sha256(got, source, archive_sha256)
                scratch = staging.with_name(staging.name + ".x")
                scratch.mkdir()
                try:
                    safe_extract(got, scratch, settings.max_extract_bytes)
                    shutil.rmtree(staging)
                    os.replace(find_image_root(scratch), staging)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
            summary = verify_images(staging, expected_images, expected_digest)
    except DownloadError as err:
        if cached:  # a bad download must not be reused
            got.unlink(missing_ok=True)
            raise DownloadError(
                f"{err}; the downloaded archive was deleted, rerun to fetch it again"
            ) from err
        raise DownloadError(f"{err} (the archive {got} was left as it is)") from err
    return {"source": source, **summary}


def check_pinned_sha256(archive: Path, source: str, archive_sha256: dict) -> None:
    pinned = archive_sha256.get(archive.name) or archive_sha256.get(
        Path(urlparse(source).path).name
    )
    if pinned:
        actual = file_sha256(archive)
        if actual != pinned:
            raise DownloadError(f"{source}: archive sha256 {actual} != pinned {pinned}")


def download_images(cfg: DictConfig, raw_dir: Path, downloads: Path) -> dict:
    """Try each configured source in order; return the summary of the one that verified."""
    dl = cfg.download
    settings = DownloadSettings(dl.timeout_s, dl.retries, dl.backoff_s, dl.max_extract_bytes)
    out_dir = raw_dir / IMAGES_DIRNAME
    expected_images = dl.expected_images or None
    if out_dir.exists():
        try:
            summary = verify_images(out_dir, expected_images, dl.content_sha256)
            log.info(
                "%s already holds %d verified images: nothing to download",
                out_dir,
                summary["images"],
            )
            # a rerun over verified images keeps naming the source that delivered them
            source = recorded_source(raw_dir) or "already present (source not recorded)"
            return {"source": source, **summary}
        except DownloadError as err:
            log.warning("existing %s does not verify (%s): fetching again", out_dir, err)
    failures = []
    for source in dl.sources:
        log.info("trying source %s", source)
        try:
            summary = materialise(
                source,
                downloads,
                out_dir,
                dict(dl.archive_sha256 or {}),
                settings,
                expected_images,
                dl.content_sha256,
            )
        except DownloadError as err:
            log.warning("source failed: %s", err)
            failures.append(f"  - {source}: {err}")
            continue
        log.info("%d images of %d people from %s", summary["images"], summary["people"], source)
        return summary
    raise DownloadError(
        "no source yielded the LFW images:\n"
        + "\n".join(failures)
        + "\nadd a working mirror, e.g. data.download.sources='[/path/to/lfw-deepfunneled.tgz]'"
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_pipeline_error
def main(cfg: DictConfig) -> None:
    log.info("download config:\n%s", OmegaConf.to_yaml(cfg.data.download))
    raw_dir = Path(hydra.utils.to_absolute_path(cfg.paths.raw))
    downloads = Path(hydra.utils.to_absolute_path(cfg.paths.downloads))
    summary = download_images(cfg.data, raw_dir, downloads)
    write_text_atomic(raw_dir / "download.json", json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
