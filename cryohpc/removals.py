"""Job files removed after the transaction that decided it, and never lost track of.

Clearing or deleting a job changes its record and lists the paths to remove in one
transaction; the files go after the commit (deleting terabytes must not hold the write
lock). A command killed in between leaves the rows behind, and whoever comes next
finishes them: a rerun of the command, any clear or delete, and the master, which also
finishes a job's removals before launching it again (so a new run never finds, or
loses, the old run's files).

A directory is first renamed beside itself, then deleted: the rename is instant, so a
removal that is interrupted never leaves a half-deleted directory under its real name.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from contextlib import suppress
from pathlib import Path

from .errors import NotFoundError
from .store import Store, Tx

log = logging.getLogger("cryohpc.removals")

TRASH_PREFIX = ".removing-"


def record(tx: Tx, project_uid: str, job_uid: str, paths: list[Path]) -> None:
    """Note paths to remove once ``tx`` commits."""
    for path in paths:
        tx.add_removal(project_uid, job_uid, str(path))


def job_dir_entries(job_dir: Path) -> list[Path]:
    """What clearing a job removes: everything in its directory (the directory stays)."""
    try:
        return sorted(p for p in job_dir.iterdir() if not p.name.startswith(TRASH_PREFIX))
    except FileNotFoundError:
        return []


def _trash_name(removal_id: int, path: Path) -> Path:
    return path.parent / f"{TRASH_PREFIX}{removal_id}-{path.name}"


def _remove(removal_id: int, path: Path) -> None:
    trash = _trash_name(removal_id, path)
    if path.is_dir() and not path.is_symlink():
        with suppress(FileNotFoundError):  # renamed by an earlier, interrupted attempt
            path.rename(trash)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
    if trash.exists():
        shutil.rmtree(trash, onerror=_unless_gone)


def _unless_gone(func, path, exc_info) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):  # someone finishing the same removal
        raise exc_info[1]


CLAIM_EXPIRY_S = 600.0


def _claimer() -> str:
    return f"{os.getpid()}:{threading.get_ident()}"


def _claimable(by: str, at: float | None) -> bool:
    """A claim may be taken over when its process is gone or it is old (a dead thread)."""
    pid = int(by.split(":")[0])
    if at is not None and time.time() - at > CLAIM_EXPIRY_S:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def finish(store: Store, project_uid: str | None = None, job_uid: str | None = None,
           older_than_s: float | None = None) -> str | None:
    """Carry out pending removals (all, a project's or one job's); None when none is
    left, else why (one failed and stays for the next attempt, or another process is
    removing some now).

    Rows are claimed first, so two processes never remove the same path (one may be
    launching the job's next run meanwhile); each row is dropped only after its path is
    gone, so an interruption repeats it; a deleted job stops showing ``deleting`` once
    its last removal is done."""
    me = _claimer()
    with store.write() as tx:
        rows, others = tx.claim_removals(me, _claimable, project_uid, job_uid, older_than_s)
    failed = f"files are being removed by process {others[0].split(':')[0]}" if others else None
    for removal_id, p_uid, j_uid, path in rows:
        try:
            _remove(removal_id, Path(path))
        except OSError as err:  # a permission problem: kept for the next attempt, and said
            log.error("%s %s: could not remove %s: %s", p_uid, j_uid, path, err)
            failed = f"could not remove {path}: {err}"
            continue
        with store.write() as tx:
            tx.drop_removal(removal_id)
            if not tx.removals(p_uid, j_uid):
                try:
                    job = tx.get_job(p_uid, j_uid, include_deleted=True)
                except NotFoundError:
                    job = None
                if job is not None and job.deleting:
                    job.deleting = False
                    tx.put_job(job)
    return failed


class Sweeper:
    """The master's share: removals left behind by interrupted commands (older than a
    grace period, so a command still working is not raced), in a thread of their own so
    deleting a large directory never delays a pass."""

    GRACE_S = 30.0

    def __init__(self, store: Store):
        self.store = store
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self.store.read() as tx:
            if not tx.removals(older_than_s=self.GRACE_S):
                return
        self._thread = threading.Thread(target=self._run, name="cryohpc-removals", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            finish(self.store, older_than_s=self.GRACE_S)
        finally:
            self.store.close()
