"""The exit-code sentinel of a job directory: written by whatever waited for the worker
(the batch script of a cluster lane, the supervisor on an SSH worker), read by the master
to tell how a worker that is gone ended. Kept free of heavy imports: the SSH helper
loads it on every status query."""

from __future__ import annotations

from pathlib import Path

EXIT_CODE_NAME = "exit_code"
# created by a batch script when the scheduler warns of the time limit (or by anyone who wants
# the job to checkpoint and stop, to be requeued): workers look for it between batches
STOP_REQUEST_NAME = "stop_request"
EXIT_REQUEUE = 75  # EX_TEMPFAIL: the worker stopped on request, its checkpoints saved; run it again
SUPERVISOR_FILE = "supervisor.pid"  # pid:start of an SSH worker's supervisor, so a retried start adopts it


def write_exit_code(job_dir: Path, code: int) -> None:
    tmp = job_dir / f".{EXIT_CODE_NAME}.tmp"
    tmp.write_text(f"{code}\n")
    tmp.replace(job_dir / EXIT_CODE_NAME)


def read_exit_code(job_dir: Path) -> int | None:
    try:
        return int((job_dir / EXIT_CODE_NAME).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
