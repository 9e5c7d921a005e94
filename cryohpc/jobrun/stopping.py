"""Stopping on request: before its time limit a batch script creates the job directory's
``stop_request`` file (on the scheduler's warning signal, which MPI launchers do not pass
on to ranks), and a job that checkpoints looks for it between batches, saves and raises
``StopRequested``; the worker reports ``stopped`` and the master queues it again. A
SIGTERM (a scheduler preempting the job, or cancelling it before its KillWait ends in
SIGKILL) asks the same of a job that looks for stops, with a few seconds' grace."""

from __future__ import annotations

import time
from pathlib import Path

from ..exitcode import STOP_REQUEST_NAME

CHECK_EVERY_S = 1.0


class StopRequested(BaseException):  # noqa: N818 (not an error: the job did what it was asked)
    """Raised by a job type once its checkpoint is saved."""


class StopWatch:
    """Whether a stop was asked for, looking at the file at most once a second."""

    def __init__(self, job_dir: Path):
        self.path = Path(job_dir) / STOP_REQUEST_NAME
        self._checked = 0.0
        self._asked = False
        self.polled = False  # the running job looks for stops: it can checkpoint and stop
        self.by_signal = False

    def ask(self) -> None:
        """Asked from within the process (a signal: preempted, cancelled or killed)."""
        self._asked = self.by_signal = True

    def asked(self) -> bool:
        self.polled = True
        if not self._asked and time.monotonic() - self._checked >= CHECK_EVERY_S:
            self._checked = time.monotonic()
            self._asked = self.path.exists()
        return self._asked
