"""Fetching an archive from one source: Google Drive (via gdown, which confirms Drive's virus-scan
page), any http(s) mirror (resumed with Range, retried with backoff), Kaggle (when credentials
exist), or a local archive or extracted folder (a path or a file:// URL).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from tqdm import tqdm

from pipeline.errors import DownloadError, SourceUnavailable

log = logging.getLogger(__name__)
CHUNK = 1 << 20


HTTP_CHUNK = 1 << 16  # a dropped connection loses at most this much of what was received


@dataclass(frozen=True)
class DownloadSettings:
    timeout_s: float = 60.0
    retries: int = 5
    backoff_s: float = 2.0
    max_extract_bytes: int = 2_000_000_000


def archive_cache_name(source: str) -> str:
    """A stable file name in data/downloads/ for the archive fetched from `source`."""
    tail = Path(urlparse(source).path).name
    suffix = next((s for s in (".tar.gz", ".tgz", ".tar", ".zip") if tail.endswith(s)), "")
    return f"{hashlib.sha1(source.encode()).hexdigest()[:12]}{suffix}"


def _validator(resp: requests.Response, total: int | None) -> dict:
    """What identifies the remote file's version: its ETag, Last-Modified and length."""
    return {
        "etag": resp.headers.get("ETag"),
        "last_modified": resp.headers.get("Last-Modified"),
        "length": total,
    }


def _resume_headers(have: int, record: Path) -> dict:
    """Range + If-Range for a partial file whose origin is recorded; {} (start over) otherwise.

    With If-Range the server sends the rest only if the file is still the version that the partial
    bytes came from, and the whole new file otherwise, so old and new bytes are never joined."""
    if not have:
        return {}
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}  # a partial file of unknown origin: fetch the whole file again
    validator = known.get("etag") or known.get("last_modified")
    if not validator:
        return {}  # the server gave no way to tell versions apart: resuming could mix them
    return {"Range": f"bytes={have}-", "If-Range": validator}


def fetch_http(url: str, dest: Path, settings: DownloadSettings) -> Path:
    """Download `url` to `dest` with resume (HTTP Range + If-Range), retries with backoff and a
    progress bar.

    Bytes go to `dest.part` and are renamed to `dest` only when the transfer is complete, so a
    killed process leaves a partial file that the next call continues from; `dest.part.json`
    records which version of the remote file the partial bytes belong to.
    """
    part = dest.with_name(dest.name + ".part")
    record = dest.with_name(dest.name + ".part.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    session = requests.Session()
    for attempt in range(settings.retries + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = _resume_headers(have, record)
        try:
            with session.get(url, headers=headers, stream=True, timeout=settings.timeout_s) as resp:
                if resp.status_code == 416 and headers:  # nothing left to send: the part is whole
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
                resuming = bool(headers) and resp.status_code == 206
                length = resp.headers.get("Content-Length")
                if resuming:
                    total = have + int(length) if length is not None else None
                    known = json.loads(record.read_text()).get("length")
                    if known is not None and total is not None and known != total:
                        # same validator, other length: a broken server; never join the two
                        raise _Restart(f"{url} changed length ({known} -> {total} bytes)")
                else:
                    if have:
                        log.info("%s: the remote file changed or cannot resume: starting over", url)
                    have = 0
                    total = int(length) if length is not None else None
                    record.write_text(json.dumps(_validator(resp, total)))
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
        except _Restart as err:
            log.warning("%s; starting over", err)
            part.unlink(missing_ok=True)
            record.unlink(missing_ok=True)
            if attempt == settings.retries:
                raise DownloadError(f"{url}: gave up after {attempt + 1} tries ({err})") from err
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
    record.unlink(missing_ok=True)
    return dest


class _Restart(Exception):
    """The partial file cannot be continued: drop it and fetch from the first byte."""


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
