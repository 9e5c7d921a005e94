"""Files a user or a site admin names are read only if they are regular files: a small
one (a site config, a declaration, an export's manifest, a detached project's metadata)
up to a bound, and a data file (``.cs``, MRC, STAR) after :func:`refuse_unless_regular`.
``/dev/zero`` or a FIFO named by mistake or malice would otherwise hang the command or
fill its memory."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import InputFileError, UserError

LIMIT_BYTES = 256 * 2**20  # far beyond any config or manifest (a 100,000-file export lists ~15 MB)


def read_named_file(path: str | os.PathLike, what: str, error: type[UserError] = InputFileError,
                    limit_bytes: int = LIMIT_BYTES) -> bytes:
    """The bytes of ``path``.

    Raises:
        ``error``: naming the file and why it is not ``what`` (missing, a folder, a device
            or FIFO, unreadable, larger than ``limit_bytes``).
    """
    with _refused_as(path, what, error):  # O_NONBLOCK: a FIFO opens at once, not when a writer comes
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:  # before fdopen, which refuses a folder with its own error
        _require_regular(path, os.fstat(fd).st_mode, what, error)
    except UserError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise error(f"{path}: larger than {limit_bytes // 2**20} MB, too large for {what}")
    return data


def refuse_unless_regular(path: str | os.PathLike, what: str, error: type[UserError] = InputFileError) -> None:
    """For readers that open the file themselves (numpy, mrcfile, starfile).

    Raises:
        ``error``: naming the file and what it is instead (missing, a folder, a device or
            FIFO, whose open would block).
    """
    with _refused_as(path, what, error):
        mode = os.stat(path).st_mode
    _require_regular(path, mode, what, error)


@contextmanager
def _refused_as(path: str | os.PathLike, what: str, error: type[UserError]) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise error(f"{path}: no such file; {what} was expected") from None
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror or err})") from None


def _require_regular(path: str | os.PathLike, mode: int, what: str, error: type[UserError]) -> None:
    if not stat.S_ISREG(mode):
        raise error(f"{path}: {'a folder' if stat.S_ISDIR(mode) else 'not a regular file'}; {what} was expected")
