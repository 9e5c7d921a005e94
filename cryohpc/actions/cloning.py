"""Clone: a new building job of the same type, params and inputs, ``cloned_from`` set,
into the same workspace(s), another or a new one. Clone chain: every job on the paths
between two jobs, each clone wired to the others' clones where the originals were
connected, to outside jobs as before."""

from __future__ import annotations

from ..builder import create_job, set_inputs
from ..instance import Instance
from ..model import Connection, Job, Workspace
from ..selections import chain
from ..store import Tx
from ..text import one_line
from .common import owner
from .context import ActionContext, Journal, journal_in


def target_workspaces(tx: Tx, job: Job, workspace: str | None) -> list[str]:
    if workspace is None:
        return list(job.workspace_uids)
    tx.get_workspace(job.project_uid, workspace)
    return [workspace]


def new_workspace(tx: Tx, project_uid: str, title: str) -> str:
    """A workspace made for clones (``--new-workspace TITLE``)."""
    one_line(title, "a workspace title")
    tx.get_project(project_uid)
    ws = Workspace(uid=f"W{tx.next_number(f'{project_uid}/workspace')}", project_uid=project_uid, title=title)
    tx.put_workspace(ws)
    return ws.uid


def check_clone(ctx: ActionContext, tx: Tx, job: Job, workspace: str | None = None) -> str:
    where = target_workspaces(tx, job, workspace)
    return f"clone into {', '.join(where) or 'no workspace'} as a new building job"


def _clone_one(tx: Tx, job: Job, workspaces: list[str], rewire: dict[str, str]) -> Job:
    clone = create_job(tx, job.project_uid, job.type, None, job.title, None, created_by=owner())
    clone.params = dict(job.params)
    clone.workspace_uids = list(workspaces)
    clone.description = job.description
    clone.tags = list(job.tags)
    clone.cloned_from = job.uid

    def wired(c: Connection) -> Connection:
        overrides = {s: r.model_copy(update={"job_uid": rewire.get(r.job_uid, r.job_uid)})
                     for s, r in c.overrides.items()}
        return c.model_copy(update={"job_uid": rewire.get(c.job_uid, c.job_uid), "overrides": overrides})

    set_inputs(tx, clone, {name: [wired(c) for c in conns] for name, conns in job.inputs.items()})
    return clone


def clone_job(inst: Instance, project_uid: str, job_uid: str, workspace: str | None = None, *,
              ctx: ActionContext | None = None, journal: Journal | None = None) -> Job:
    """Raises:
    NotFoundError: no such job or workspace.
    """
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        clone = _clone_one(tx, job, target_workspaces(tx, job, workspace), {})
        journal_in(tx, journal)
    return clone


def clone_chain(inst: Instance, project_uid: str, first: str, last: str, workspace: str | None = None,
                new_workspace_title: str | None = None) -> list[Job]:
    """Clone every job on the paths between ``first`` and ``last`` in one transaction;
    returns the clones, parents first.

    Raises:
        UserError: the two jobs are not on one chain. NotFoundError: no such job or workspace.
    """
    with inst.store.write() as tx:
        jobs = {j.uid: j for j in tx.list_jobs(project_uid)}
        for uid in (first, last):
            if uid not in jobs:
                tx.get_job(project_uid, uid)
        order = chain(jobs, first, last)
        if new_workspace_title is not None:
            workspace = new_workspace(tx, project_uid, new_workspace_title)
        rewire: dict[str, str] = {}
        clones = []
        for uid in order:
            clone = _clone_one(tx, jobs[uid], target_workspaces(tx, jobs[uid], workspace), rewire)
            rewire[uid] = clone.uid
            clones.append(clone)
    return clones
