"""Link, unlink, move: one job shown in several workspaces of its project. Deleting it
removes it from all of them; the last workspace cannot be unlinked (move it instead)."""

from __future__ import annotations

from ..instance import Instance
from ..model import Job
from ..store import Tx
from .common import Refused
from .context import ActionContext, Journal, journal_in


def check_link(ctx: ActionContext, tx: Tx, job: Job, workspace: str) -> str:
    tx.get_workspace(job.project_uid, workspace)
    if workspace in job.workspace_uids:
        raise Refused(f"{job.ref} is already in workspace {workspace}")
    return f"link to workspace {workspace}"


def check_unlink(ctx: ActionContext, tx: Tx, job: Job, workspace: str) -> str:
    tx.get_workspace(job.project_uid, workspace)
    if workspace not in job.workspace_uids:
        raise Refused(f"{job.ref} is not in workspace {workspace}")
    if len(job.workspace_uids) == 1:
        raise Refused(f"{job.ref}: {workspace} is its last workspace; move it to another instead")
    return f"unlink from workspace {workspace}"


def _source(job: Job, from_workspace: str | None) -> str | None:
    if from_workspace is not None:
        if from_workspace not in job.workspace_uids:
            raise Refused(f"{job.ref} is not in workspace {from_workspace}")
        return from_workspace
    if len(job.workspace_uids) > 1:
        raise Refused(f"{job.ref} is in workspaces {', '.join(job.workspace_uids)}; say which to move it from")
    return job.workspace_uids[0] if job.workspace_uids else None


def check_move(ctx: ActionContext, tx: Tx, job: Job, workspace: str, from_workspace: str | None = None) -> str:
    tx.get_workspace(job.project_uid, workspace)
    source = _source(job, from_workspace)
    if source == workspace or (source is None and workspace in job.workspace_uids):
        raise Refused(f"{job.ref} is already in workspace {workspace}")
    return f"move from {source or 'no workspace'} to {workspace}"


def _change(inst: Instance, project_uid: str, job_uid: str, ctx: ActionContext | None, journal: Journal | None,
            check, apply) -> Job:
    ctx = ctx or ActionContext(inst)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        check(ctx, tx, job)
        job.workspace_uids = apply(job)
        journal_in(tx, journal)
        tx.put_job(job)
    return job


def link_job(inst: Instance, project_uid: str, job_uid: str, workspace: str, *,
             ctx: ActionContext | None = None, journal: Journal | None = None) -> Job:
    return _change(inst, project_uid, job_uid, ctx, journal, lambda c, t, j: check_link(c, t, j, workspace),
                   lambda j: [*j.workspace_uids, workspace])


def unlink_job(inst: Instance, project_uid: str, job_uid: str, workspace: str, *,
               ctx: ActionContext | None = None, journal: Journal | None = None) -> Job:
    return _change(inst, project_uid, job_uid, ctx, journal, lambda c, t, j: check_unlink(c, t, j, workspace),
                   lambda j: [w for w in j.workspace_uids if w != workspace])


def move_job(inst: Instance, project_uid: str, job_uid: str, workspace: str, from_workspace: str | None = None,
             *, ctx: ActionContext | None = None, journal: Journal | None = None) -> Job:
    def moved(job: Job) -> list[str]:
        source = _source(job, from_workspace)
        kept = [w for w in job.workspace_uids if w != source]
        return kept if workspace in kept else [*kept, workspace]

    return _change(inst, project_uid, job_uid, ctx, journal,
                   lambda c, t, j: check_move(c, t, j, workspace, from_workspace), moved)
