"""Files written whole or not at all: a temporary name beside the target, renamed over it
when complete, removed on any failure. A full disk or a denied write becomes one
``OutputFileError`` naming the file, and leaves no temporary file behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputFileError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield the temporary path to write; on leaving, it becomes ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputFileError(f"{path}: cannot be written ({err.strerror or err})") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
