"""sha256 digests of files and of extracted image trees."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (an archive's checksum; the prepared file's data version)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def content_digest(root: Path, relpaths: Iterable[str]) -> str:
    """sha256 over sorted (relative path, file sha256) pairs: independent of archive bytes."""
    digest = hashlib.sha256()
    for rel in sorted(relpaths):
        digest.update(f"{rel}\0{file_sha256(root / rel)}\n".encode())
    return digest.hexdigest()
