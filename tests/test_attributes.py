from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.attributes import parse_attributes
from pipeline.errors import PrepareError

HEADER = "# comment\n#\tperson\timagenum\tMale\tSmiling\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("Ann Lee\t1\t0.5\n", r":3: 3 fields, expected 4"),
        ("Ann Lee\t1\t0.5\tabc\n", r":3: not a number"),
        ("Ann Lee\tx\t0.5\t1\n", r":3: not a number"),
        (
            "Ann Lee\t1\t0.5\t1\nBob\t2\t1\t1\nAnn Lee\t1\t0\t0\n",
            r":5: duplicate row for Ann_Lee #1 \(first at line 3\)",
        ),
        ("\n", r"a header but no data rows \(truncated download\?\)"),  # header and a blank line
    ],
)
def test_malformed_attribute_lines_are_named(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "a.txt"
    path.write_text(HEADER + body, encoding="utf-8")
    with pytest.raises(PrepareError, match=message):
        parse_attributes(path, expected_attributes=2)


def test_attributes_in_latin1_or_with_nan_are_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(
        (HEADER + "Ann Lee\t1\t0.5\t1\nJos\u00e9 Mar\u00eda\t1\t1\t1\n").encode("latin-1")
    )
    with pytest.raises(PrepareError, match=r"a.txt:4: not UTF-8 text .*re-save"):
        parse_attributes(path, expected_attributes=2)
    path.write_text(HEADER + "Ann Lee\t1\t0.5\t1\nBob\t2\tnan\t1\n", encoding="utf-8")
    with pytest.raises(PrepareError, match=r"a.txt:4: a score is nan or infinite"):
        parse_attributes(path, expected_attributes=2)


def test_attributes_tolerate_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(("\ufeff" + HEADER + "Ann Lee\t1\t0.5\t-1\n").replace("\n", "\r\n").encode())
    parsed = parse_attributes(path, expected_attributes=2)
    assert parsed.names == ["Male", "Smiling"] and parsed.keys == [("Ann_Lee", 1)]
    np.testing.assert_array_equal(parsed.scores, [[0.5, -1.0]])


def test_attribute_header_and_row_count_checked(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("# c\nperson\timagenum\tMale\nA\t1\t1\n", encoding="utf-8")
    with pytest.raises(PrepareError, match=r":2: header must start"):
        parse_attributes(path, expected_attributes=1)
    path.write_text("# c\n#\tperson\timagenum\tMale\nA\t1\t1\n", encoding="utf-8")
    with pytest.raises(PrepareError, match="1 rows, expected 13143"):
        parse_attributes(path, expected_attributes=1, expected_rows=13143)
    with pytest.raises(PrepareError, match="1 attribute names, expected 73"):
        parse_attributes(path, expected_attributes=73)
