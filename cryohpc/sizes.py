"""How much disk a job or project uses: the bytes of its regular files, each file counted
once however many hard links it has, symbolic links never followed (imported stacks are
links to raw data outside the project, which cleanup never touches).

Measuring walks the tree with ``os.scandir`` and holds no database transaction: callers
measure first and record the figure in a short write afterwards.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

Progress = Callable[[int, int], None]  # (files seen, bytes seen)


@dataclass
class Usage:
    bytes: int = 0
    files: int = 0
    _inodes: set[tuple[int, int]] = field(default_factory=set, repr=False)

    def add_file(self, st: os.stat_result) -> None:
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in self._inodes:
                return
            self._inodes.add(key)
        self.bytes += st.st_size
        self.files += 1


class Walker:
    """Adds up trees into one ``Usage``, calling ``progress`` about every ``every_s``."""

    def __init__(self, progress: Progress | None = None, every_s: float = 1.0):
        self.usage = Usage()
        self.progress, self.every_s = progress, every_s
        self._next = time.monotonic() + every_s

    def add(self, path: Path, skip: Callable[[str], bool] | None = None) -> Usage:
        """Add ``path`` (a file or a tree); ``skip(name)`` leaves out top-level entries of
        a directory. Returns what this call added."""
        before = (self.usage.bytes, self.usage.files)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return Usage()
        if stat.S_ISREG(st.st_mode):
            self.usage.add_file(st)
        elif stat.S_ISDIR(st.st_mode):
            self._walk(str(path), skip)
        return Usage(self.usage.bytes - before[0], self.usage.files - before[1])

    def _walk(self, top: str, skip: Callable[[str], bool] | None) -> None:
        stack = [(top, skip)]
        while stack:
            path, leave_out = stack.pop()
            try:
                entries = os.scandir(path)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            with entries:
                for entry in entries:
                    if leave_out is not None and leave_out(entry.name):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append((entry.path, None))
                        elif entry.is_file(follow_symlinks=False):
                            self.usage.add_file(entry.stat(follow_symlinks=False))
                    except FileNotFoundError:
                        continue  # removed while measured
            if self.progress is not None and time.monotonic() >= self._next:
                self.progress(self.usage.files, self.usage.bytes)
                self._next = time.monotonic() + self.every_s


def measure(paths: Iterable[Path] | Path) -> Usage:
    """Bytes and files of a path or paths (hard links counted once across all of them)."""
    walker = Walker()
    for p in [paths] if isinstance(paths, Path) else paths:
        walker.add(Path(p))
    return walker.usage
