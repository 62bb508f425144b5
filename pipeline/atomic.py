"""Write files so that a crash never leaves a half-written one under the final name."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temp file lives in the same directory so the final os.replace is atomic on POSIX.
    `suffix` keeps libraries that infer the format from the extension happy (np.savez, PIL).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=suffix or final.suffix, dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # the bytes are on disk before the name points at them
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale(final: Path) -> None:
    """Temp files a SIGKILLed writer of `final` left behind (one writer per path is assumed);
    a folder moved aside by `atomic_dir` is put back first if nothing replaced it."""
    recover_dir(final)
    for stale in final.parent.glob(f".{final.name}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _aside(final: Path) -> Path:
    return final.parent / f".{final.name}.previous"


def recover_dir(path: str | os.PathLike[str]) -> None:
    """If a writer died after moving the old folder aside and before the new one took its name,
    put the old one back: `path` then always names a whole folder, the old or the new."""
    final = Path(path)
    aside = _aside(final)
    if aside.is_dir() and not final.exists():
        os.replace(aside, final)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds.

    Directories cannot be renamed over one another, so the swap is: move the old folder aside,
    rename the new one in, then delete the old one. A kill at any point leaves either name
    holding a whole folder, and `recover_dir` (run by the next writer, and by readers that
    want it) puts the old one back when the new one never arrived: the old is never deleted first.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    aside = _aside(final)
    try:
        yield tmp
        if final.exists():
            os.replace(final, aside)
        os.replace(tmp, final)
        if aside.exists():
            shutil.rmtree(aside)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
