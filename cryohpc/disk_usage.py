"""Recorded sizes: each job's directory and intermediate results, and the project's total
split into job directories and other files, with when each was measured.

Jobs are measured when they end (completed, killed, failed), are cleared, and on
``project refresh-size``. Every measurement walks the disk with no transaction open and
records its figures in one short write, so a terabyte project never holds the lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .builder import job_dir_abs
from .errors import CryohpcError
from .intermediates import intermediate_results
from .model import Job, now
from .removals import TRASH_PREFIX
from .sizes import Usage, Walker, measure
from .store import Store


def _intermediate_paths(store: Store, project_uid: str, job_uid: str) -> list[Path]:
    with store.read() as tx:
        job = tx.get_job(project_uid, job_uid, include_deleted=True)
        if job.deleted or not job.outputs:
            return []
        try:
            return intermediate_results(tx, job)[0]
        except CryohpcError:
            return []


def record_job_size(store: Store, project_uid: str, job_uid: str, walker: Walker | None = None) -> Job | None:
    """Measure one job's directory and intermediate results, then record both (unless the
    job changed status meanwhile: a newer measurement will follow). Returns the job as
    recorded, or None when it was not."""
    with store.read() as tx:
        project = tx.get_project(project_uid)
        seen = tx.get_job(project_uid, job_uid, include_deleted=True)
    if seen.deleted:
        return None
    walker = walker or Walker()
    job_dir = job_dir_abs(project, seen)
    whole = walker.add(job_dir, skip=lambda name: name.startswith(TRASH_PREFIX))
    partial = measure(_intermediate_paths(store, project_uid, job_uid)).bytes
    with store.write() as tx:
        job = tx.get_job(project_uid, job_uid, include_deleted=True)
        if job.status != seen.status or job.run.launched_at != seen.run.launched_at or job.deleted:
            return None
        job.job_dir_size, job.intermediate_size, job.size_measured_at = whole.bytes, partial, now()
        tx.put_job(job)
        return job


@dataclass
class ProjectUsage:
    jobs: int
    other: int
    files: int
    measured_jobs: int
    seconds: float


def refresh_project_size(store: Store, project_uid: str,
                         progress: Callable[[str, int, int], None] | None = None) -> ProjectUsage:
    """Measure every job directory of a project and the files outside them, recording each
    job's figures as it goes and the project's at the end; ``progress(what, files, bytes)``
    is called about once a second."""
    t0 = time.monotonic()
    with store.read() as tx:
        project = tx.get_project(project_uid)
        jobs = tx.list_jobs(project_uid)
    walker = Walker(progress=(lambda f, b: progress("measuring", f, b)) if progress else None)
    job_bytes = measured = 0
    job_dirs: set[str] = set()
    for job in jobs:
        job_dirs.add(Path(job.job_dir).parts[0])
        recorded = record_job_size(store, project_uid, job.uid, walker)
        if recorded is not None:
            measured += 1
            job_bytes += recorded.job_dir_size
        else:  # changed meanwhile: counted, not recorded
            job_bytes += walker.add(job_dir_abs(project, job)).bytes
    root = Path(project.project_dir)
    other = walker.add(root, skip=lambda name: name in job_dirs or name.startswith(TRASH_PREFIX)).bytes
    usage: Usage = walker.usage
    with store.write() as tx:
        project = tx.get_project(project_uid)
        project.size_jobs, project.size_other, project.size_files = job_bytes, other, usage.files
        project.size_measured_at = now()
        tx.put_project(project)
    if progress:
        progress("done", usage.files, usage.bytes)
    return ProjectUsage(job_bytes, other, usage.files, measured, time.monotonic() - t0)
