"""Intermediate results: what a completed job kept on the way to its final results
(checkpoints, per-iteration versions of its outputs). The final version of every result
stays, and so does any version another job uses (by a slot override naming that
version, or because a child's job.json read it when it ran).

Used by the 'clear intermediate results' action, by the cleanup tool, and by the master
when a job completes (projects and jobs may ask for it then, as CryoSPARC v4.3+ does).
"""

from __future__ import annotations

import glob
from pathlib import Path

from . import removals
from .builder import job_dir_abs
from .errors import InputFileError, NotFoundError
from .jobfile import JobFile
from .jobtypes import get_jobtype
from .model import Job, Project
from .store import Tx


def _used_elsewhere(tx: Tx, job: Job, root: Path) -> set[Path]:
    """Files of ``job`` that other jobs use: versions named by slot overrides, and the
    inputs each child's job.json recorded when it was launched. Both kinds of user are
    among its children (an override's source is a parent of the job that overrides)."""
    used: set[Path] = set()
    children = []
    for uid in job.children:
        try:
            children.append(tx.get_job(job.project_uid, uid, include_deleted=True))
        except NotFoundError:
            continue
    for other in children:
        for conns in other.inputs.values():
            for conn in conns:
                for ref in conn.overrides.values():
                    if ref.job_uid != job.uid or ref.version == -1:
                        continue
                    group = job.output(ref.group_name)
                    result = group.result(ref.result_name) if group else None
                    if result and -len(result.metafiles) <= ref.version < len(result.metafiles):
                        used.add(root / result.metafiles[ref.version])
    project = tx.get_project(job.project_uid)
    for child in children:
        try:
            recorded = JobFile.read(job_dir_abs(project, child))
        except InputFileError:
            continue  # never launched: it reads whatever is final when it runs
        for conns in recorded.inputs.values():
            for conn in conns:
                used.update(Path(p) for p in (*conn.slots.values(), *conn.passthrough.values()))
    return used


def intermediate_results(tx: Tx, job: Job) -> tuple[list[Path], dict[tuple[str, str], list[int]]]:
    """The paths clearing would remove, and per (group, result) the versions it clears."""
    project = tx.get_project(job.project_uid)
    root = Path(project.project_dir)
    job_dir = job_dir_abs(project, job)
    used = _used_elsewhere(tx, job, root)
    paths: list[Path] = []
    versions: dict[tuple[str, str], list[int]] = {}
    finals = {root / r.metafiles[-1] for g in job.outputs for r in g.results if r.metafiles}
    for group in job.outputs:
        for result in group.results:
            for i, rel in enumerate(result.metafiles[:-1]):
                path = root / rel
                if i in result.cleared_versions or path in used or path in finals:
                    continue
                versions.setdefault((group.name, result.name), []).append(i)
                if path not in paths and path.exists():
                    paths.append(path)
    for pattern in get_jobtype(job.type).intermediate:
        for hit in sorted(glob.glob(str(job_dir / pattern))):
            path = Path(hit)
            if path not in used and path not in finals and job_dir in path.parents:
                paths.append(path)
    return paths, versions


def trim(tx: Tx, job: Job) -> list[Path]:
    """Mark the job's intermediate versions cleared and note their files for removal
    after ``tx`` commits (``removals.finish``); the paths noted. The caller saves ``job``."""
    paths, versions = intermediate_results(tx, job)
    for group in job.outputs:
        for result in group.results:
            cleared = versions.get((group.name, result.name))
            if cleared:
                result.cleared_versions = sorted({*result.cleared_versions, *cleared})
    job.outputs = list(job.outputs)
    removals.record(tx, job.project_uid, job.uid, paths)
    job.intermediate_size = 0
    return paths


def clears_on_completion(project: Project, job: Job) -> bool:
    """The job's own setting, else its project's (on by default)."""
    if job.delete_intermediate_on_complete is not None:
        return job.delete_intermediate_on_complete
    return project.delete_intermediate_on_complete
