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

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import hydra
import requests
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from pipeline.atomic import atomic_dir, write_text_atomic
from pipeline.errors import PipelineError, exit_on_pipeline_error

log = logging.getLogger(__name__)

IMAGES_DIRNAME = "lfw-deepfunneled"
IMAGE_NAME = re.compile(r"^(?P<person>[^/]+)/(?P=person)_(?P<num>\d{4})\.jpg$")
CHUNK = 1 << 20
HTTP_CHUNK = 1 << 16  # a dropped connection loses at most this much of what was received


class DownloadError(PipelineError):
    """A source failed (network, HTTP status, checksum, archive content)."""


class SourceUnavailable(DownloadError):
    """A source that cannot be used here at all (e.g. Kaggle without credentials)."""


@dataclass(frozen=True)
class DownloadSettings:
    timeout_s: float = 60.0
    retries: int = 5
    backoff_s: float = 2.0
    max_extract_bytes: int = 2_000_000_000


# --------------------------------------------------------------------------- checksums


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(root: Path, relpaths: Iterable[str]) -> str:
    """sha256 over sorted (relative path, file sha256) pairs: independent of archive bytes."""
    digest = hashlib.sha256()
    for rel in sorted(relpaths):
        digest.update(f"{rel}\0{sha256_file(root / rel)}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- fetching


def archive_cache_name(source: str) -> str:
    """A stable file name in data/downloads/ for the archive fetched from `source`."""
    tail = Path(urlparse(source).path).name
    suffix = next((s for s in (".tar.gz", ".tgz", ".tar", ".zip") if tail.endswith(s)), "")
    return f"{hashlib.sha1(source.encode()).hexdigest()[:12]}{suffix}"


def sniff_archive(path: Path) -> str:
    """'gzip', 'zip' or 'tar' from the first bytes; a clear error for HTML pages and junk."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text:
        raise DownloadError(
            f"{path} is an HTML page, not an archive (a login, quota or virus-scan page?): "
            "check the URL or put another mirror first in data.download.sources"
        )
    raise DownloadError(f"{path} is not a .tgz/.tar/.zip archive (first bytes {head[:8]!r})")


def fetch_http(url: str, dest: Path, settings: DownloadSettings) -> Path:
    """Download `url` to `dest` with resume (HTTP Range), retries with backoff and a progress bar.

    Bytes go to `dest.part` and are renamed to `dest` only when the transfer is complete, so a
    killed process leaves a partial file that the next call continues from.
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    session = requests.Session()
    for attempt in range(settings.retries + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with session.get(url, headers=headers, stream=True, timeout=settings.timeout_s) as resp:
                if resp.status_code == 416 and have:  # nothing left to send: the part is whole
                    break
                if resp.status_code in (400, 401, 403, 404, 410):
                    raise DownloadError(
                        f"{url} answered HTTP {resp.status_code}: fix the URL or use another source"
                    )
                resp.raise_for_status()
                if "text/html" in resp.headers.get("Content-Type", ""):
                    raise DownloadError(
                        f"{url} served an HTML page instead of an archive: check the URL or use another source"
                    )
                resuming = have > 0 and resp.status_code == 206
                if not resuming:
                    have = 0  # server ignored the Range header: start over
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with (
                    open(part, "ab" if resuming else "wb") as fh,
                    tqdm(
                        total=total,
                        initial=have,
                        unit="B",
                        unit_scale=True,
                        desc=Path(url).name[:30],
                    ) as bar,
                ):
                    for chunk in resp.iter_content(HTTP_CHUNK):
                        fh.write(chunk)
                        bar.update(len(chunk))
                got = part.stat().st_size
                if total is not None and got < total:
                    raise requests.ConnectionError(f"connection closed at {got} of {total} bytes")
            break
        except (
            requests.ConnectionError,  # dropped connections and short bodies
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.HTTPError,  # 5xx (4xx are raised above as DownloadError)
        ) as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            if attempt == settings.retries:
                raise DownloadError(f"{url}: gave up after {attempt + 1} tries ({err})") from err
            wait = settings.backoff_s * 2**attempt
            log.warning(
                "%s: %s (status %s); retry %d/%d in %.1fs",
                url,
                err,
                status,
                attempt + 1,
                settings.retries,
                wait,
            )
            time.sleep(wait)
    os.replace(part, dest)
    return dest


def fetch_gdrive(url: str, dest: Path, settings: DownloadSettings) -> Path:
    """Google Drive answers large files with an HTML confirmation page; gdown knows that dance."""
    import gdown

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        out = gdown.download(
            url,
            str(part),
            quiet=False,
            resume=True,
            timeout=settings.timeout_s,
            retries=settings.retries,
        )
    except Exception as err:  # gdown raises its own FileURLRetrievalError and requests errors
        raise DownloadError(f"Google Drive download of {url} failed: {err}") from err
    if out is None or not part.exists():
        raise DownloadError(
            f"Google Drive download of {url} produced no file (quota exceeded or link changed?)"
        )
    os.replace(part, dest)
    return dest


def kaggle_credentials_present() -> bool:
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config_dir / "kaggle.json").exists() or (config_dir / "access_token").exists()


def fetch_kaggle(ref: str, dest: Path) -> Path:
    """kaggle://owner/dataset → a zip (its images sit in lfw-deepfunneled/lfw-deepfunneled/)."""
    if not kaggle_credentials_present():
        raise SourceUnavailable(
            f"kaggle://{ref} needs Kaggle credentials (KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json)"
        )
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as err:
        raise SourceUnavailable(
            f"kaggle://{ref} needs the kaggle package: pip install '.[kaggle]'"
        ) from err
    api = KaggleApi()
    api.authenticate()
    workdir = dest.with_name(dest.name + ".kaggle")
    workdir.mkdir(parents=True, exist_ok=True)
    api.dataset_download_files(ref, path=str(workdir), unzip=False, quiet=False)
    zips = sorted(workdir.glob("*.zip"))
    if not zips:
        raise DownloadError(f"kaggle://{ref} produced no zip file in {workdir}")
    os.replace(zips[0], dest)
    shutil.rmtree(workdir, ignore_errors=True)
    return dest


def local_path(source: str) -> Path:
    if source.startswith("file://"):
        return Path(unquote(urlparse(source).path))
    return Path(source).expanduser()


def fetch(source: str, downloads: Path, settings: DownloadSettings) -> Path:
    """Return a local archive or folder for `source`, downloading into `downloads` when remote."""
    scheme = urlparse(source).scheme
    if scheme in ("http", "https"):
        dest = downloads / archive_cache_name(source)
        if dest.exists():
            log.info("reusing downloaded archive %s for %s", dest, source)
            return dest
        if urlparse(source).hostname in ("drive.google.com", "drive.usercontent.google.com"):
            return fetch_gdrive(source, dest, settings)
        return fetch_http(source, dest, settings)
    if scheme == "kaggle":
        dest = downloads / (archive_cache_name(source) + ".zip")
        return dest if dest.exists() else fetch_kaggle(source.removeprefix("kaggle://"), dest)
    if scheme in ("", "file"):
        path = local_path(source)
        if not path.exists():
            raise SourceUnavailable(f"{path} does not exist")
        return path
    raise SourceUnavailable(
        f"unsupported source {source!r}: use http(s)://, file://, kaggle:// or a path"
    )


# --------------------------------------------------------------------------- extraction


def _check_member_name(name: str, archive: Path) -> None:
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or (parts and re.match(r"^[A-Za-z]:", parts[0])):
        raise DownloadError(f"{archive}: refusing member with an absolute path: {name!r}")
    if ".." in parts:
        raise DownloadError(f"{archive}: refusing member that climbs out of the folder: {name!r}")


def _extract_tar(archive: Path, dest: Path, max_bytes: int) -> None:
    total = 0
    try:
        with tarfile.open(archive, mode="r|*") as tar:  # streaming: one pass, constant memory
            for member in tar:
                _check_member_name(member.name, archive)
                if member.isdir():
                    (dest / member.name).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    kind = (
                        "link" if (member.issym() or member.islnk()) else "device or special file"
                    )
                    raise DownloadError(f"{archive}: refusing {kind} member {member.name!r}")
                total += member.size
                if total > max_bytes:
                    raise DownloadError(
                        f"{archive} unpacks to more than {max_bytes} bytes (a gzip bomb?): "
                        "raise data.download.max_extract_bytes if this archive is trusted"
                    )
                target = dest / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except (tarfile.TarError, EOFError, OSError) as err:
        if isinstance(err, DownloadError):
            raise
        raise DownloadError(
            f"{archive} is truncated or corrupt ({type(err).__name__}: {err}); it was deleted, rerun to fetch it again"
        ) from err


def _extract_zip(archive: Path, dest: Path, max_bytes: int) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member_name(info.filename, archive)
                mode = info.external_attr >> 16
                if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise DownloadError(
                        f"{archive}: refusing link or special member {info.filename!r}"
                    )
            if sum(i.file_size for i in infos) > max_bytes:
                raise DownloadError(
                    f"{archive} unpacks to more than {max_bytes} bytes (a zip bomb?): "
                    "raise data.download.max_extract_bytes if this archive is trusted"
                )
            for info in infos:
                target = dest / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise DownloadError(
            f"{archive} is truncated or corrupt ({err}); it was deleted, rerun to fetch it again"
        ) from err


def safe_extract(archive: Path, dest: Path, max_bytes: int) -> None:
    """Extract regular files and folders only; any absolute, `..`, link or device member is refused."""
    kind = sniff_archive(archive)
    if kind == "zip":
        _extract_zip(archive, dest, max_bytes)
    else:
        _extract_tar(archive, dest, max_bytes)


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
    """Fetch one source and move its verified images to `out_dir`. Raises DownloadError."""
    got = fetch(source, downloads, settings)
    with atomic_dir(out_dir) as staging:
        if got.is_dir():
            root = find_image_root(got)
            shutil.copytree(root, staging, dirs_exist_ok=True)
        else:
            pinned = archive_sha256.get(got.name) or archive_sha256.get(
                Path(urlparse(source).path).name
            )
            if pinned:
                actual = sha256_file(got)
                if actual != pinned:
                    if got.is_relative_to(downloads):
                        got.unlink()
                    raise DownloadError(
                        f"{source}: archive sha256 {actual} != pinned {pinned}; deleted, rerun to fetch again"
                    )
            scratch = staging.with_name(staging.name + ".x")
            scratch.mkdir()
            try:
                safe_extract(got, scratch, settings.max_extract_bytes)
                shutil.rmtree(staging)
                os.replace(find_image_root(scratch), staging)
            except DownloadError:
                if got.is_relative_to(downloads):  # a corrupt download must not be reused
                    got.unlink(missing_ok=True)
                raise
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        summary = verify_images(staging, expected_images, expected_digest)
    return {"source": source, **summary}


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
            return {"source": "already present", **summary}
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
