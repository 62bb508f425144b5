"""Safe unpacking of downloaded archives (.tgz, .tar, .zip): regular files and folders only.

Any absolute, `..`, link or device member refuses the whole archive, as does one that would unpack
to more than a size limit (gzip and zip bombs). HTML pages and junk are told apart from archives by
their first bytes.
"""

from __future__ import annotations

import errno
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from pipeline.errors import DownloadError, PipelineError

CHUNK = 1 << 20


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
                _write(src, target)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        if isinstance(err, DownloadError):
            raise
        raise _unpack_error(archive, err) from err


def _write(src: object, target: Path) -> None:
    try:
        with open(target, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    except OSError as err:
        if err.filename is None:  # a failed write() names no file: name the one being written
            err.filename = str(target)
        raise


def _extract_zip(archive: Path, dest: Path, max_bytes: int) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member_name(info.filename, archive)
                # no file-type bits (ZipFile.writestr, Windows tools) means a plain file
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
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
                with zf.open(info) as src:
                    _write(src, target)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
        if isinstance(err, DownloadError):
            raise
        raise _unpack_error(archive, err) from err


# errors of this machine, not of the archive: the archive is kept and the run stops
MACHINE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this machine's file-size limit",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}


def _unpack_error(archive: Path, err: BaseException) -> PipelineError:
    if isinstance(err, OSError) and err.errno in MACHINE_ERRNOS:
        where = f" writing {err.filename}" if err.filename else ""
        return PipelineError(
            f"unpacking {archive} failed: {MACHINE_ERRNOS[err.errno]}{where}; the archive is "
            "intact and kept: fix the machine (free space, limits, permissions) and rerun"
        )
    return DownloadError(f"{archive} is truncated or corrupt ({type(err).__name__}: {err})")


def safe_extract(archive: Path, dest: Path, max_bytes: int) -> None:
    """Extract regular files and folders only; any absolute, `..`, link or device member is refused."""
    kind = sniff_archive(archive)
    if kind == "zip":
        _extract_zip(archive, dest, max_bytes)
    else:
        _extract_tar(archive, dest, max_bytes)
