"""Final results and what they protect.

A job marked final is a result the user keeps; every job it was built from (through
input connections and slot overrides, in any workspace) is an "ancestor of final". A
final job cannot be cleared, deleted or changed; an ancestor can be cleared (it can be
re-run to the same result) but not deleted or changed. The marks are derived from the
job graph: ``protectors`` computes them for a whole project in one pass, ``protector``
finds the final job behind one job by walking its descendants, and ``refresh_marks``
stores the derived flag wherever it changed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from .errors import NotFoundError
from .model import Job
from .store import Tx


def protectors(jobs: list[Job]) -> dict[str, str]:
    """uid -> uid of a final job it is (or is an ancestor of), for every protected job."""
    by_uid = {j.uid: j for j in jobs}
    out: dict[str, str] = {}
    for final in sorted((j for j in jobs if j.is_final_result and not j.deleted), key=lambda j: _number(j.uid)):
        out.setdefault(final.uid, final.uid)
        todo = deque(final.parents)
        while todo:
            uid = todo.popleft()
            if uid in out or uid not in by_uid:
                continue
            out[uid] = final.uid
            todo.extend(by_uid[uid].parents)
    return out


def descendants(tx: Tx, job: Job) -> Iterator[Job]:
    """Every job that uses ``job``'s outputs, directly or not, nearest first (lazily: a
    caller looking for one stops early)."""
    seen: set[str] = set()
    todo = deque(job.children)
    while todo:
        uid = todo.popleft()
        if uid in seen:
            continue
        seen.add(uid)
        try:
            child = tx.get_job(job.project_uid, uid)
        except NotFoundError:
            continue
        yield child
        todo.extend(child.children)


def protector(tx: Tx, job: Job) -> str | None:
    """The final job that protects ``job`` (itself, or a descendant), or None."""
    if job.is_final_result:
        return job.uid
    return next((d.uid for d in descendants(tx, job) if d.is_final_result), None)


def refresh_marks(tx: Tx, project_uid: str) -> list[str]:
    """Store ``is_ancestor_of_final_result`` where the graph changed it; the uids changed."""
    jobs = tx.list_jobs(project_uid, include_deleted=True)
    marks = protectors(jobs)
    changed = []
    for job in jobs:
        wanted = job.uid in marks and not job.is_final_result
        if job.is_ancestor_of_final_result != wanted:
            job.is_ancestor_of_final_result = wanted
            tx.put_job(job)
            changed.append(job.uid)
    return changed


def why_protected(tx: Tx, job: Job, doing: str, ancestors_too: bool = True) -> str | None:
    """The refusal for ``doing`` to a protected job, naming the final job behind it; None
    when it may go ahead (``ancestors_too=False``: only a final job itself is refused)."""
    if job.is_final_result:
        return f"{job.ref} is marked as a final result; it cannot be {doing} (unmark it first: " \
               f"cryohpc job unmark-final {job.project_uid} {job.uid})"
    if not ancestors_too:
        return None
    final = protector(tx, job)
    if final is None:
        return None
    return f"{job.ref} is an ancestor of final result {final}; it cannot be {doing} " \
           f"(unmark {final} first: cryohpc job unmark-final {job.project_uid} {final})"


def _number(uid: str) -> int:
    digits = uid.lstrip("JPW")
    return int(digits) if digits.isdigit() else 0
