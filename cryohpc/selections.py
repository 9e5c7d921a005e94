"""Which jobs a multi-job action acts on: uids and filters (workspace, status, tag, type,
lane, ancestors or descendants of a job, the chain between two jobs), and the job graph
those walk. The graph is read once per selection from one snapshot of the project."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UserError
from .model import Job
from .status import JobStatus
from .store import Tx


@dataclass
class Selection:
    uids: list[str] = field(default_factory=list)
    workspace: str | None = None
    statuses: list[JobStatus] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    lane: str | None = None
    ancestors_of: str | None = None
    descendants_of: str | None = None
    chain: tuple[str, str] | None = None
    every: bool = False  # every job of the project (--all)

    def empty(self) -> bool:
        return not (self.every or self.uids or self.workspace or self.statuses or self.tags or self.types or self.lane
                    or self.ancestors_of or self.descendants_of or self.chain)

    def describe(self) -> str:
        parts = ["--all"] if self.every else []
        parts += [" ".join(self.uids)] if self.uids else []
        parts += [f"--workspace {self.workspace}"] if self.workspace else []
        parts += [f"--status {s.value}" for s in self.statuses] + [f"--tag {t}" for t in self.tags]
        parts += [f"--type {t}" for t in self.types] + ([f"--lane {self.lane}"] if self.lane else [])
        parts += [f"--ancestors-of {self.ancestors_of}"] if self.ancestors_of else []
        parts += [f"--descendants-of {self.descendants_of}"] if self.descendants_of else []
        parts += [f"--chain {self.chain[0]} {self.chain[1]}"] if self.chain else []
        return " ".join(parts)


def _walk(jobs: dict[str, Job], start: str, step) -> set[str]:
    seen: set[str] = set()
    stack = list(step(jobs[start]))
    while stack:
        uid = stack.pop()
        if uid in seen or uid not in jobs:
            continue
        seen.add(uid)
        stack.extend(step(jobs[uid]))
    return seen


def ancestors(jobs: dict[str, Job], uid: str) -> set[str]:
    return _walk(jobs, uid, lambda j: j.parents)


def descendants(jobs: dict[str, Job], uid: str) -> set[str]:
    return _walk(jobs, uid, lambda j: j.children)


def chain(jobs: dict[str, Job], first: str, last: str) -> list[str]:
    """Every job on a path from ``first`` to ``last`` (either may be the upstream one),
    both included, parents before children.

    Raises:
        UserError: neither descends from the other.
    """
    for a, b in ((first, last), (last, first)):
        if b in descendants(jobs, a):
            on_path = {a, b} | (descendants(jobs, a) & ancestors(jobs, b))
            return topological([jobs[u] for u in on_path])
    raise UserError(f"{first} and {last} are not on one chain: neither descends from the other")


def topological(jobs: list[Job]) -> list[str]:
    """Uids, every job after the parents it has among ``jobs``."""
    inside = {j.uid: j for j in jobs}
    done: list[str] = []
    placed: set[str] = set()

    def visit(uid: str, path: frozenset[str]) -> None:
        if uid in placed or uid in path:
            return
        for p in inside[uid].parents:
            if p in inside:
                visit(p, path | {uid})
        placed.add(uid)
        done.append(uid)

    for j in sorted(jobs, key=lambda j: int(j.uid[1:])):
        visit(j.uid, frozenset())
    return done


def select(tx: Tx, project_uid: str, sel: Selection) -> tuple[list[Job], list[tuple[str, str]]]:
    """The jobs a selection names, in uid order (graph order for a chain), and the uids it
    named that are not there (deleted, or never existed) with why.

    Raises:
        UserError: no criterion at all, or a job named by --ancestors-of/--descendants-of/
            --chain that does not exist.
    """
    if sel.empty():
        raise UserError("select jobs by uid, --all, or a filter (--workspace, --status, --tag, --type, --lane, "
                        "--ancestors-of, --descendants-of, --chain)")
    tx.get_project(project_uid)
    if sel.workspace:
        tx.get_workspace(project_uid, sel.workspace)
    jobs = {j.uid: j for j in tx.list_jobs(project_uid)}
    for named in filter(None, [sel.ancestors_of, sel.descendants_of, *(sel.chain or ())]):
        if named not in jobs:
            tx.get_job(project_uid, named)  # names the project and job in its error
    missing: list[tuple[str, str]] = []
    if sel.uids:
        wanted = []
        for uid in dict.fromkeys(sel.uids):
            if uid in jobs:
                wanted.append(uid)
            else:
                try:
                    gone = tx.get_job(project_uid, uid, include_deleted=True).deleted
                except UserError:
                    gone = False
                missing.append((uid, "already deleted" if gone else f"no job {uid} in project {project_uid}"))
    else:
        wanted = list(jobs)
    keep = set(wanted)
    if sel.ancestors_of:
        keep &= ancestors(jobs, sel.ancestors_of)
    if sel.descendants_of:
        keep &= descendants(jobs, sel.descendants_of)
    order = chain(jobs, *sel.chain) if sel.chain else None
    if order is not None:
        keep &= set(order)
    out = [jobs[u] for u in (order or wanted) if u in keep and _matches(jobs[u], sel)]
    return out, missing


def _matches(job: Job, sel: Selection) -> bool:
    return ((sel.workspace is None or sel.workspace in job.workspace_uids)
            and (not sel.statuses or job.status in sel.statuses)
            and (not sel.tags or any(t in job.tags for t in sel.tags))
            and (not sel.types or job.type in sel.types)
            and (sel.lane is None or job.queued_lane == sel.lane))
