"""Clear intermediate results: what a completed job kept on the way to its final results
(checkpoints, per-iteration versions of its outputs) goes; the final version of every
result stays, and so does any version another job uses (by a slot override naming that
version, or because a child's job.json read it when it ran)."""

from __future__ import annotations

import glob
from pathlib import Path

from .. import removals
from ..builder import job_dir_abs
from ..errors import InputFileError
from ..instance import Instance
from ..jobfile import JobFile
from ..jobtypes import get_jobtype
from ..model import Job
from ..status import JobStatus
from ..store import Tx
from .common import Refused
from .context import ActionContext, Journal, journal_in


def _used_elsewhere(tx: Tx, job: Job, root: Path) -> set[Path]:
    """Files of ``job`` that other jobs use: versions named by slot overrides, and the
    inputs each child's job.json recorded when it was launched."""
    used: set[Path] = set()
    for other in tx.list_jobs(job.project_uid):
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
    for child_uid in job.children:
        child = tx.get_job(job.project_uid, child_uid, include_deleted=True)
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


def _size(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        items = p.rglob("*") if p.is_dir() else [p]
        total += sum(f.stat().st_size for f in items if f.is_file() and not f.is_symlink())
    return total


def check_clear_intermediate(ctx: ActionContext, tx: Tx, job: Job) -> str:
    if job.status != JobStatus.COMPLETED:
        raise Refused(f"{job.ref} is {job.status.value}; only completed jobs have intermediate results to clear "
                      "(a killed or failed job keeps its checkpoints to resume from)")
    paths, versions = intermediate_results(tx, job)
    if not paths and not versions:
        raise Refused(f"{job.ref} has no intermediate results")
    return f"remove {len(paths)} intermediate file(s) or folder(s), {_size(paths) / 1e6:.1f} MB"


def clear_intermediate(inst: Instance, project_uid: str, job_uid: str, *, ctx: ActionContext | None = None,
                       journal: Journal | None = None) -> Job:
    """Raises:
    Refused: the job is not completed, or has no intermediate results.
    """
    ctx = ctx or ActionContext(inst)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        check_clear_intermediate(ctx, tx, job)
        paths, versions = intermediate_results(tx, job)
        for group in job.outputs:
            for result in group.results:
                cleared = versions.get((group.name, result.name))
                if cleared:
                    result.cleared_versions = sorted({*result.cleared_versions, *cleared})
        job.outputs = list(job.outputs)
        removals.record(tx, project_uid, job_uid, paths)
        journal_in(tx, journal)
        tx.put_job(job)
    removals.finish(inst.store, project_uid, job_uid)
    return job
