"""One exception type for bad input and config, and the wrapper that turns it into one clean line.

Every error a user can cause (a bad URL, a corrupt archive, latent_dim=0, ...) is raised as a
PipelineError whose message names the thing and the fix. Entry points print that message and exit
with status 1 instead of a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class PipelineError(Exception):
    """A problem with input data or configuration that the user can fix."""


class DownloadError(PipelineError):
    """A source failed (network, HTTP status, checksum, archive content)."""


class SourceUnavailable(DownloadError):
    """A source that cannot be used here at all (e.g. Kaggle without credentials)."""


class PrepareError(PipelineError):
    """A bad image, attributes file or prepare setting."""


def exit_on_pipeline_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a stage's main: a PipelineError becomes one logged line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PipelineError as err:
            log.error("%s", err)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            message = (
                f"no space left on device writing {err.filename or 'a file'}: free some space and rerun; "
                "files are written to a temporary name first, so the previous ones are intact"
            )
            log.error("%s", message)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(1)

    return wrapper
