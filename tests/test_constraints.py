"""The pins in constraints.txt must install anywhere the README says the project runs."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def pins() -> list[Requirement]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_every_pin_is_one_public_version() -> None:
    # a local label (torch==2.13.0+cpu) exists only in one machine's wheel folder: the public
    # index has no such file, so the install fails everywhere else; `==2.13.0` matches both
    for req in pins():
        (spec,) = req.specifier
        assert spec.operator == "==", f"{req}: pin one version with =="
        version = Version(spec.version)
        assert version.local is None, f"{req}: drop the local label '+{version.local}'"


def test_requires_python_admits_every_supported_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    supported = SpecifierSet(project["requires-python"])
    for version in ("3.11", "3.12", "3.13"):
        assert Version(version) in supported, f"requires-python refuses Python {version}"
    assert {p.name.lower() for p in pins()} >= {"tensorflow", "torch", "keras", "mlflow", "dvc"}
