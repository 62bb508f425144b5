"""One exception type for bad input and config, and the wrapper that turns it into one clean line.

Every error a user can cause (a bad URL, a corrupt archive, latent_dim=0, ...) is raised as a
PipelineError whose message names the thing and the fix. Entry points print that message and exit
with status 1 instead of a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
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


# file-system failures a user fixes outside the program: what to do about each
WRITE_ERRORS = {
    errno.ENOSPC: "free some space and rerun",
    errno.EDQUOT: "your disk quota is full: free some space and rerun",
    errno.EFBIG: "the file system refuses files this large: write to another one (paths.*)",
    errno.EROFS: "the file system is read-only: point paths.* at a writable folder",
    errno.EACCES: "no permission: check the folder's owner and mode, or point paths.* elsewhere",
    errno.EIO: "an input/output error: check the disk",
}


def exit_on_pipeline_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a stage's main: a PipelineError, or a file-system write error (WRITE_ERRORS),
    becomes one logged line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PipelineError as err:
            log.error("%s", err)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        except OSError as err:
            if err.errno not in WRITE_ERRORS:
                raise
            what = (
                "no space left on device"
                if err.errno == errno.ENOSPC
                else f"{err.strerror or os.strerror(err.errno)} ({errno.errorcode[err.errno]})"
            )
            message = (
                f"{what} writing {err.filename or 'a file'}: {WRITE_ERRORS[err.errno]}; "
                "files are written to a temporary name first, so the previous ones are intact"
            )
            log.error("%s", message)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(1)

    return wrapper
