"""Files a user or a site admin names are read only if they are regular files: a small
one (a site config, a declaration, an export's manifest, a detached project's metadata)
up to a bound, and a data file (``.cs``, MRC, STAR) after :func:`refuse_unless_regular`.
``/dev/zero`` or a FIFO named by mistake or malice would otherwise hang the command or
fill its memory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InputFileError, UserError

LIMIT_BYTES = 256 * 2**20  # far beyond any config or manifest (a 100,000-file export lists ~15 MB)


def read_named_file(path: str | os.PathLike, what: str, error: type[UserError] = InputFileError,
                    limit_bytes: int = LIMIT_BYTES) -> bytes:
    """The bytes of ``path``.

    Raises:
        ``error``: naming the file and why it is not ``what`` (missing, a folder, a device
            or FIFO, unreadable, larger than ``limit_bytes``).
    """
    path = Path(path)
    try:  # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{path}: no such file; {what} was expected") from None
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror or err})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"{path}: {_kind(mode)}; {what} was expected")
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
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{path}: no such file; {what} was expected") from None
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        raise error(f"{path}: {_kind(mode)}; {what} was expected")


def _kind(mode: int) -> str:
    return "a folder" if stat.S_ISDIR(mode) else "not a regular file"
