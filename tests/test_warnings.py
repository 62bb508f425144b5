"""The suite's warning policy (pyproject.toml): a DeprecationWarning raised where the project's own
code calls something deprecated fails the test that hits it; other packages' stay quiet."""

from __future__ import annotations

import pytest

WARN = "import warnings\nwarnings.warn('this call is deprecated', DeprecationWarning)\n"


def run_as(module: str) -> None:
    # warnings are attributed to the module whose code made the call: its globals' __name__
    exec(compile(WARN, f"<{module}>", "exec"), {"__name__": module})


def test_a_deprecated_call_from_project_code_is_an_error() -> None:
    with pytest.raises(DeprecationWarning, match="deprecated"):
        run_as("pipeline.metrics")


def test_a_deprecated_call_inside_another_package_is_not() -> None:
    run_as("keras.src.some_module")  # no error: not ours to fix
