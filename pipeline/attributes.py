"""lfw_attributes.txt: a comment line, a `#`-shifted tab header, then one row of attribute scores
per image. Every problem is one PrepareError naming `file:line`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PrepareError


@dataclass
class Attributes:
    names: list[str]
    keys: list[tuple[str, int]]  # (person folder name, image number), in file order
    scores: np.ndarray  # float32 (rows, len(names))


def parse_attributes(
    path: str | os.PathLike[str],
    expected_attributes: int | None = 73,
    expected_rows: int | None = None,
) -> Attributes:
    """Read lfw_attributes.txt: a comment line, a `#`-shifted tab header, then one row per image.

    Person names have spaces in the file and underscores in the folder names. Errors name the line.
    """
    path = Path(path)
    if not path.exists():
        raise PrepareError(
            f"attributes file {path} is missing: run `dvc repro` (data.dvc imports it) "
            "or set data.attributes=false to use all images without attributes"
        )
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="strict")  # tolerate a BOM
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise PrepareError(
            f"{path}:{line}: not UTF-8 text (byte {err.object[err.start]:#x}); "
            "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from err
    lines = text.splitlines()  # tolerates \r\n
    if len(lines) < 3:
        raise PrepareError(
            f"{path}: {len(lines)} lines; expected a comment, a header and data rows"
        )
    header = lines[1].split("\t")
    if header[:3] != ["#", "person", "imagenum"]:
        raise PrepareError(
            f"{path}:2: header must start with '#\\tperson\\timagenum', got {lines[1][:60]!r}"
        )
    names = header[3:]
    if expected_attributes and len(names) != expected_attributes:
        raise PrepareError(
            f"{path}:2: {len(names)} attribute names, expected {expected_attributes}"
        )
    keys: list[tuple[str, int]] = []
    rows: list[list[str]] = []
    seen: dict[tuple[str, int], int] = {}
    for lineno, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 + len(names):
            raise PrepareError(
                f"{path}:{lineno}: {len(fields)} fields, expected {2 + len(names)} (person, imagenum, scores)"
            )
        try:
            key = (fields[0].strip().replace(" ", "_"), int(fields[1]))
        except ValueError as err:
            raise PrepareError(f"{path}:{lineno}: not a number ({err})") from err
        if key in seen:
            raise PrepareError(
                f"{path}:{lineno}: duplicate row for {key[0]} #{key[1]} (first at line {seen[key]})"
            )
        seen[key] = lineno
        keys.append(key)
        rows.append(fields[2:])
    if not keys:
        raise PrepareError(
            f"{path}: a header but no data rows (truncated download?): delete it and rerun "
            "`dvc repro`, or set data.attributes=false to use all images without attributes"
        )
    if expected_rows and len(keys) != expected_rows:
        raise PrepareError(
            f"{path}: {len(keys)} rows, expected {expected_rows} (truncated download? "
            "delete it and rerun, or set data.expected_attribute_rows)"
        )
    try:  # numpy parses the ~1 M numbers in C; only on failure look for the line to name
        scores = np.array(rows, dtype=np.float32).reshape(len(rows), len(names))
    except ValueError:
        for lineno, row in zip(seen.values(), rows, strict=True):
            try:
                [float(v) for v in row]
            except ValueError as err:
                raise PrepareError(f"{path}:{lineno}: not a number ({err})") from err
        raise
    bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if len(bad):
        lineno = list(seen.values())[bad[0]]
        raise PrepareError(
            f"{path}:{lineno}: a score is nan or infinite ({len(bad)} such rows): fix the file"
        )
    return Attributes(names, keys, scores)
