"""Tags and descriptions: words and text people put on jobs to find and explain them."""

from __future__ import annotations

from ..errors import UserError
from ..instance import Instance
from ..model import Job
from ..store import Tx
from ..text import one_line
from .common import Refused
from .context import ActionContext, Journal, journal_in

MAX_TAG = 64
MAX_DESCRIPTION = 10_000


def checked_tag(tag: str) -> str:
    """A tag is one word of printable text (it is shown in tables and selected by name).

    Raises:
        UserError: empty, too long, with spaces or control characters.
    """
    one_line(tag, "a tag")
    if not tag or len(tag) > MAX_TAG or any(ch.isspace() for ch in tag) or "," in tag:
        raise UserError(f"tag {tag!r} must be 1 to {MAX_TAG} characters without spaces or commas")
    return tag


def check_tag(ctx: ActionContext, tx: Tx, job: Job, add: list[str] = (), remove: list[str] = ()) -> str:
    add = [checked_tag(t) for t in add]
    new = [t for t in add if t not in job.tags]
    gone = [t for t in remove if t in job.tags]
    if not new and not gone:
        raise Refused(f"{job.ref} already has tags {', '.join(job.tags) or '(none)'}; nothing to change")
    return "; ".join(filter(None, [f"add tag(s) {', '.join(new)}" if new else "",
                                   f"remove tag(s) {', '.join(gone)}" if gone else ""]))


def tag_job(inst: Instance, project_uid: str, job_uid: str, add: list[str] = (), remove: list[str] = (), *,
            ctx: ActionContext | None = None, journal: Journal | None = None) -> Job:
    ctx = ctx or ActionContext(inst)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        check_tag(ctx, tx, job, add, remove)
        job.tags = [t for t in dict.fromkeys([*job.tags, *add]) if t not in set(remove) - set(add)]
        journal_in(tx, journal)
        tx.put_job(job)
    return job


def describe_job(inst: Instance, project_uid: str, job_uid: str, text: str) -> Job:
    """Set a job's description (several lines allowed; control characters are not).

    Raises:
        UserError: control characters, or longer than 10,000 characters.
    """
    for line in text.split("\n"):
        one_line(line, "a description line")
    if len(text) > MAX_DESCRIPTION:
        raise UserError(f"a description is at most {MAX_DESCRIPTION} characters (this one has {len(text)})")
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        job.description = text
        tx.put_job(job)
    return job
