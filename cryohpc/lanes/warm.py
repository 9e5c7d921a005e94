"""Warm workers of the local lane: a job starts in milliseconds instead of a second.

For each rank count in the lane's ``warm_ranks`` one worker is kept started with
``--standby``: launched exactly as a job's worker would be (same launcher, ranks, Python
and environment, its own session), it has done its imports and loaded its compiled
kernels, and waits on its standard input. A job whose launch would have run that same
command line with that same environment is handed to it by writing the job directory to
that pipe; anything else (GPU jobs, other rank counts) starts cold as before. A standby is
used once and replaced while the lane runs no job, so its warm-up never takes a core from
one.

A standby says on its output when it is ready (warmed up, reading its input) and when it
has taken its job. A hand-over to a ready standby counts only once it said it took the job:
one that died just before, whose pipe still took the line, would otherwise fail the job
with it; without that word the job starts cold. One still warming up is not waited for (the
master goes on serving; the job waits in the pipe until the warm-up ends).

What the launcher itself prints (MPI's abort messages) is kept in an unlinked file and
appended to the job's log when the run ends, where a cold launch would have put it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import CryohpcError
from ..events import STANDBY_READY, STANDBY_TAKEN
from ..procs import kill_group, process_start_ticks

log = logging.getLogger("cryohpc.lanes")

RETRY_AFTER_S = 60.0  # a standby that died before its job is started again only after this
CLOSE_GRACE_S = 2.0
TAKE_TIMEOUT_S = 10.0  # a ready standby answers in milliseconds; past this it is stopped and the job starts cold


@dataclass
class Standby:
    ranks: int
    proc: subprocess.Popen
    output: IO[bytes]  # the launcher's own messages, for the job's log


class WarmWorkers:
    """The standbys of one lane, by rank count."""

    def __init__(self, lane_name: str, ranks: list[int], command: Callable[[int], list[str]], env: dict[str, str]):
        self.lane_name = lane_name
        self.ranks = sorted(set(ranks))
        self._command, self._env = command, env
        self._idle: dict[int, Standby] = {}
        self._retry_at: dict[int, float] = {}

    def take(self, command: list[str], env: dict[str, str], job_command: Callable[[int], list[str]]) -> Standby | None:
        """The idle standby whose job launch would have been ``command`` with ``env``, if any;
        it leaves the pool whether or not the hand-over then works."""
        if env != self._env:
            return None
        for ranks, standby in list(self._idle.items()):
            if command == job_command(ranks):
                del self._idle[ranks]
                if standby.proc.poll() is None:
                    return standby
                self._forget(standby)
        return None

    def hand_over(self, standby: Standby, job_dir: Path) -> bool:
        """Give the standby its job; False (and the standby stopped) when it cannot take it."""
        line = os.fsencode(str(job_dir))
        if b"\n" in line:
            self._stop(standby)
            return False
        ready = _said(standby, STANDBY_READY, wait_s=0.0)
        try:
            standby.proc.stdin.write(line + b"\n")
            standby.proc.stdin.close()  # the standby's next read ends: one job each
        except (BrokenPipeError, OSError, ValueError):
            self._stop(standby)
            return False
        if ready and not _said(standby, STANDBY_TAKEN, wait_s=TAKE_TIMEOUT_S):
            log.warning("lane %s: the warm worker of %d rank(s) did not take %s (%s); starting it cold",
                        self.lane_name, standby.ranks, job_dir,
                        "it exited" if standby.proc.poll() is not None else "no answer")
            self._stop(standby)
            return False
        return True

    def tend(self, idle_cpus: int) -> None:
        """Start the missing standbys of at most ``idle_cpus`` ranks (a waiting standby uses
        no core); forget dead ones."""
        for ranks, standby in list(self._idle.items()):
            if standby.proc.poll() is not None:
                log.warning("lane %s: the warm worker of %d rank(s) exited (%s) before any job; "
                            "retrying in %.0f s", self.lane_name, ranks, standby.proc.returncode, RETRY_AFTER_S)
                del self._idle[ranks]
                self._forget(standby)
                self._retry_at[ranks] = time.monotonic() + RETRY_AFTER_S
        for ranks in self.ranks:
            if ranks in self._idle or ranks > idle_cpus or time.monotonic() < self._retry_at.get(ranks, 0.0):
                continue
            try:
                self._idle[ranks] = self._start(ranks)
            except (CryohpcError, OSError, ValueError) as err:
                log.error("lane %s: cannot start a warm worker of %d rank(s): %s", self.lane_name, ranks, err)
                self._retry_at[ranks] = time.monotonic() + RETRY_AFTER_S

    def close(self) -> None:
        """Stop every idle standby (they run no job)."""
        for standby in self._idle.values():
            self._stop(standby)
        self._idle.clear()

    def _start(self, ranks: int) -> Standby:
        output = tempfile.TemporaryFile()  # noqa: SIM115 - kept open until the job's end
        try:
            proc = subprocess.Popen(self._command(ranks), cwd=tempfile.gettempdir(), env=self._env,
                                    stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except BaseException:
            output.close()
            raise
        return Standby(ranks, proc, output)

    def _stop(self, standby: Standby) -> None:
        self._forget(standby)  # its input ends first: a waiting standby exits by itself
        kill_group(standby.proc.pid, process_start_ticks(standby.proc.pid), grace_s=CLOSE_GRACE_S,
                   reap=standby.proc.poll)

    @staticmethod
    def _forget(standby: Standby) -> None:
        with contextlib.suppress(OSError, ValueError):
            standby.proc.stdin.close()
        standby.output.close()


def _said(standby: Standby, word: bytes, wait_s: float) -> bool:
    """Whether the standby printed ``word``, waiting up to ``wait_s`` for it; False as soon
    as the standby is seen to have exited without it."""
    deadline = time.monotonic() + wait_s
    delay = 0.0005
    while True:
        exited = standby.proc.poll() is not None  # before the read: what it printed before exiting counts
        try:
            fd = standby.output.fileno()
            if word in os.pread(fd, os.fstat(fd).st_size, 0):
                return True
        except (OSError, ValueError):
            return False
        if exited or time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def append_output(output: IO[bytes], job_dir: Path) -> None:
    """Copy what the launcher of a handed-over standby printed to the end of the job's log."""
    try:
        output.seek(0)
        text = output.read().replace(STANDBY_READY, b"", 1).replace(STANDBY_TAKEN, b"", 1)
        if text:
            with open(job_dir / "job.log", "ab") as job_log:
                job_log.write(text)
    except OSError as err:
        log.warning("launcher output of %s not kept: %s", job_dir, err)
    finally:
        output.close()
