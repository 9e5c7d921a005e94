"""Waking the master as soon as there is something to do, instead of at its next poll.

The master listens on a FIFO in the instance home (``master.wake``). Every database write
made outside the master's own thread (a ``job queue``, a kill, an edit) and every local
worker that finishes writes a byte to it; the master's wait between passes returns at
once. A poke never blocks and never fails: with no master listening, opening the FIFO for
writing fails (ENXIO) and the poke is dropped, and on another host (a cluster node
sharing the home) the FIFO has no reader either, so polling remains the fallback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import stat
import threading
import time
from pathlib import Path

_local = threading.local()
log = logging.getLogger("cryohpc.master")


def mark_master_thread() -> None:
    """This thread runs the master: its own writes need not wake it."""
    _local.master = True


def wake_master(path: Path) -> None:
    """Nudge the master listening on ``path``, if any (never blocks, never raises)."""
    if getattr(_local, "master", False):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # no FIFO, no reader (ENXIO), not ours: the poll will do
        return
    with contextlib.suppress(OSError):  # EAGAIN: the FIFO is full of pokes already
        os.write(fd, b"!")
    os.close(fd)


class Wakeup:
    """The master's end of the FIFO. ``wait`` sleeps until poked or ``timeout_s``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._rd = self._wr = -1
        try:
            self._open()
        except OSError as err:  # a filesystem without FIFOs: the master polls, as before
            log.warning("no wake-up FIFO at %s (%s): the master polls only", self.path, err)
            self.close()

    def _open(self) -> None:
        try:
            if not stat.S_ISFIFO(os.lstat(self.path).st_mode):
                self.path.unlink()
                os.mkfifo(self.path, 0o600)
        except FileNotFoundError:
            os.mkfifo(self.path, 0o600)
        # our own write end keeps the read end from seeing EOF once pokers close theirs
        self._rd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._wr = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)

    def wait(self, timeout_s: float, stop: threading.Event | None = None, slice_s: float = 0.25) -> bool:
        """True when poked. Waits in slices so a ``stop`` set from another thread ends it
        within ``slice_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return False
            if self._rd < 0:
                time.sleep(min(left, slice_s))
                continue
            ready, _, _ = select.select([self._rd], [], [], min(left, slice_s))
            if ready:
                self._drain()
                return True

    def poke(self) -> None:
        if self._wr >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wr, b"!")

    def _drain(self) -> None:
        try:
            while os.read(self._rd, 4096):
                pass
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise

    def close(self) -> None:
        for fd in (self._rd, self._wr):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._rd = self._wr = -1
