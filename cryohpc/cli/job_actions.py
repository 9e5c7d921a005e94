"""``cryohpc job ACTION P1 J1 [J2...] [filters]``: every job action, for one job or a
selection. One job named alone is acted on at once; anything else prints the plan (job by
job: what happens, what is skipped and why), asks for confirmation unless ``--yes``, and
reports each job's outcome. ``--dry-run`` prints the plan only; ``--json`` gives it to
scripts."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from ..api import JobStatus, Selection
from .jobs import job
from .kit import Ctx, _dump, _parse_assignments, _table, confirm_or_refuse, pass_ctx


def _selection_options(fn, lane_filter: str = "--lane"):
    opts = [
        click.option("--all", "every", is_flag=True, help="every job of the project"),
        click.option("--workspace", help="jobs of this workspace"),
        click.option("--status", "statuses", multiple=True, help="jobs in this status (repeatable)"),
        click.option("--tag", "tags", multiple=True, help="jobs with this tag (repeatable: any of them)"),
        click.option("--type", "types", multiple=True, help="jobs of this type (repeatable)"),
        click.option(lane_filter, "in_lane", help="jobs queued to this lane"),
        click.option("--ancestors-of", help="jobs J's inputs come from, directly or not"),
        click.option("--descendants-of", help="jobs that use J's outputs, directly or not"),
        click.option("--chain", nargs=2, help="jobs on the paths between two jobs, both included"),
        click.option("--dry-run", is_flag=True, help="print the plan only"),
        click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation"),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return click.argument("project_uid")(click.argument("uids", nargs=-1)(fn))


def _selection(uids, sel: dict) -> tuple[Selection, bool]:
    try:
        statuses = [JobStatus(s) for s in sel.pop("statuses")]
    except ValueError:
        raise click.BadParameter(f"status must be one of {', '.join(s.value for s in JobStatus)}") from None
    chain = tuple(sel.pop("chain") or ()) or None
    selection = Selection(uids=list(uids), workspace=sel.pop("workspace"), statuses=statuses,
                          tags=list(sel.pop("tags")), types=list(sel.pop("types")), lane=sel.pop("in_lane"),
                          ancestors_of=sel.pop("ancestors_of"), descendants_of=sel.pop("descendants_of"),
                          chain=chain, every=sel.pop("every"))
    filtered = selection.every or any([selection.workspace, statuses, selection.tags, selection.types,
                                       selection.lane, selection.ancestors_of, selection.descendants_of, chain])
    return selection, filtered


def _plan_table(plan) -> str:
    rows = [{"uid": i.job_uid, "type": i.type, "status": i.status,
             "plan": i.what if not i.outcome else (f"{i.outcome}: {i.detail}" if i.detail else i.outcome),
             "title": i.title} for i in plan.items]
    return _table(rows, ["uid", "type", "status", "plan", "title"])


def act(c: Ctx, action: str, project_uid: str, uids, sel: dict, args: dict,
        single: Callable[[object], tuple[object, str]]) -> None:
    """One job named alone: ``single(handle)`` gives (json, text) of the done action.
    Otherwise plan, confirm, run, report; exit 1 when a job failed."""
    dry_run, yes = sel.pop("dry_run"), sel.pop("yes")
    selection, filtered = _selection(uids, sel)
    project = c.api.find_project(project_uid)
    if len(uids) == 1 and not filtered and not dry_run:
        data, text = single(project.find_job(uids[0]))
        c.emit(data, text)
        return
    plan = project.plan(action, selection, **args)
    if dry_run or not plan.todo:
        c.emit(plan.as_dict(), f"{action} {selection.describe()}:\n{_plan_table(plan)}"
               + ("" if plan.todo else "\nnothing to do"))
        return
    if not c.as_json:
        click.echo(f"{action} {selection.describe()}:\n{_plan_table(plan)}")
    confirm_or_refuse(yes, f"{len(plan.todo)} job(s) would be changed; add --yes to go ahead without a "
                           "prompt (or --dry-run to see the plan only)", f"{action}: {len(plan.todo)} job(s)?")
    plan = project.run_plan(plan)
    done = [i for i in plan.todo if i.outcome == "done"]
    failed = [i for i in plan.todo if i.outcome == "failed"]
    text = f"operation #{plan.operation_id}: {action} done for {len(done)} job(s)" + (
        f", failed for {len(failed)}:\n" + "\n".join(f"  {i.job_uid}: {i.detail}" for i in failed) if failed else "")
    c.emit(plan.as_dict(), text)
    if failed:
        sys.exit(1)


def _gpu_ids(gpus: str | None) -> list[int] | None:
    try:
        return [int(g) for g in gpus.split(",")] if gpus else None
    except ValueError:
        raise click.BadParameter(f"{gpus!r} is not a comma-separated list of GPU ids") from None


@click.option("--lane", help="lane name (default: local)")
@click.option("--priority", type=int, help="higher launches first")
@click.option("--target", help="worker target of an SSH node lane (default: the first with room)")
@click.option("--gpus", help="run on these GPU ids, e.g. 0,1")
@click.option("--var", "variables", multiple=True, help="custom variable of a cluster lane, name=value")
@click.option("--with-ancestors", is_flag=True, help="first queue, in order, the job's building (cleared) ancestors")
@pass_ctx
def job_queue(c: Ctx, project_uid, uids, lane, priority, target, gpus, variables, with_ancestors, **sel) -> None:
    """Queue jobs; the master launches each when its inputs are ready."""
    args = dict(lane=lane, priority=priority, gpu_ids=_gpu_ids(gpus), custom_vars=_parse_assignments(variables) or None,
                target=target)
    if with_ancestors:
        if len(uids) != 1 or sel["dry_run"] or any(v for k, v in sel.items() if k not in ("yes", "dry_run")):
            raise click.UsageError("--with-ancestors takes one job, named alone")
        queued = c.api.find_project(project_uid).find_job(uids[0]).queue_with_ancestors(
            lane, priority, args["gpu_ids"], args["custom_vars"], target)
        c.emit([_dump(j) for j in queued], "\n".join(f"{j.project_uid} {j.uid} queued to lane {j.queued_lane}"
                                                      + (f" ({j.run.reason})" if j.run.reason else "")
                                                      for j in queued))
        return

    def single(h):
        j = h.queue(lane, priority, args["gpu_ids"], args["custom_vars"], target)
        note = f" ({j.run.reason})" if j.run.reason else ""
        return _dump(j), (f"{j.project_uid} {j.uid} queued to lane {j.queued_lane}"
                          + (f", worker {j.queued_target}" if j.queued_target else "") + note)

    act(c, "queue", project_uid, uids, sel, args, single)


job.command("queue")(_selection_options(job_queue, lane_filter="--from-lane"))


def _simple(name: str, action: str, doc: str, method: str, done: str) -> None:
    @pass_ctx
    def command(c: Ctx, project_uid, uids, **sel) -> None:
        def single(h):
            j = getattr(h, method)()
            return _dump(j), f"{j.project_uid} {j.uid} {done}"

        act(c, action, project_uid, uids, sel, {}, single)

    command.__doc__ = doc
    job.command(name)(_selection_options(command))


_simple("kill", "kill", "Kill queued or running jobs; their files stay until cleared.", "kill", "killed")
_simple("clear", "clear", "Erase outputs (params and connections stay); queued jobs leave the queue.", "clear",
        "cleared")
_simple("delete", "delete", "Clear and remove jobs; their uids are never used again.", "delete", "deleted")
_simple("mark-complete", "mark-complete", "Make killed or failed jobs' latest outputs usable as inputs.",
        "mark_complete", "marked complete")
_simple("mark-final", "mark-final", "Mark completed jobs as final results: they and every job they were built from "
        "are protected from deletion (the final ones from clearing too).", "mark_final", "marked final")
_simple("unmark-final", "unmark-final", "Take the final-result mark off jobs.", "unmark_final", "unmarked final")
_simple("clear-intermediate", "clear-intermediate",
        "Remove completed jobs' intermediate results (checkpoints, earlier versions nobody uses); "
        "with --all, the whole project's.", "clear_intermediate", "intermediate results cleared")


def _requeue(name: str, doc: str) -> None:
    @click.option("--lane", help="queue to another lane")
    @pass_ctx
    def command(c: Ctx, project_uid, uids, lane, **sel) -> None:
        def single(h):
            j = getattr(h, name)(lane)
            how = "cleared and queued again" if name == "restart" else "queued again, keeping its files,"
            return _dump(j), f"{j.project_uid} {j.uid} {how} to lane {j.queued_lane}"

        act(c, name, project_uid, uids, sel, {"lane": lane}, single)

    command.__doc__ = doc
    job.command(name)(_selection_options(command, lane_filter="--from-lane"))


_requeue("restart", "Kill if running, clear, and queue again to the same lane with the same params "
                    "(one restart operation at a time).")
_requeue("resume", "Queue killed or failed jobs again keeping their files: they continue from their checkpoints.")


@click.option("--to", "to_workspace", help="workspace for the clones (default: the original's)")
@click.option("--new-workspace", help="make a workspace with this title for the clones")
@pass_ctx
def job_clone(c: Ctx, project_uid, uids, to_workspace, new_workspace, **sel) -> None:
    """Clone jobs: same type, params and inputs; new uid; building."""
    if new_workspace is not None:
        if to_workspace:
            raise click.UsageError("give --to or --new-workspace, not both")
        if not sel["dry_run"]:
            to_workspace = c.api.find_project(project_uid).create_workspace(new_workspace).uid

    def single(h):
        j = h.clone(to_workspace).model
        return _dump(j), f"{j.project_uid} {j.uid} cloned from {j.cloned_from}"

    act(c, "clone", project_uid, uids, sel, {"workspace": to_workspace}, single)


job.command("clone")(_selection_options(job_clone))


def _membership(name: str, doc: str, to_required: bool, with_from: bool) -> None:
    @click.option("--to", "to_workspace", required=to_required, help="workspace to put the jobs in")
    @click.option("--from", "from_workspace", required=not to_required, help="workspace to take the jobs from")
    @pass_ctx
    def command(c: Ctx, project_uid, uids, to_workspace, from_workspace, **sel) -> None:
        if name == "link":
            args = {"workspace": to_workspace}
        elif name == "unlink":
            args = {"workspace": from_workspace}
        else:
            args = {"workspace": to_workspace, "from_workspace": from_workspace}

        def single(h):
            j = getattr(h, name)(**args)
            return _dump(j), f"{j.project_uid} {j.uid} {name}ed: in {', '.join(j.workspace_uids)}"

        act(c, name, project_uid, uids, sel, args, single)

    command.__doc__ = doc
    job.command(name)(_selection_options(command))


_membership("link", "Show jobs in one more workspace (one job, several workspaces).", True, False)
_membership("unlink", "Take jobs out of a workspace (not their last).", False, False)
_membership("move", "Move jobs to another workspace (--from when a job is in several).", True, True)


@click.option("--add", multiple=True, help="tag to add (repeatable)")
@click.option("--remove", multiple=True, help="tag to remove (repeatable)")
@pass_ctx
def job_tag(c: Ctx, project_uid, uids, add, remove, **sel) -> None:
    """Add or remove tags."""
    def single(h):
        j = h.tag(list(add), list(remove))
        return _dump(j), f"{j.project_uid} {j.uid} tags: {', '.join(j.tags) or '(none)'}"

    act(c, "tag", project_uid, uids, sel, {"add": list(add), "remove": list(remove)}, single)


job.command("tag")(_selection_options(job_tag))


@click.option("--to", "dest", type=click.Path(file_okay=False),
              help="export folder (several jobs: the folder that receives one per job); "
                   "default: the project's exports/jobs/")
@pass_ctx
def job_export(c: Ctx, project_uid, uids, dest, **sel) -> None:
    """Export completed jobs as self-contained folders (outputs, referenced files, manifest)."""
    def single(h):
        where = h.export(dest)
        return {"export": str(where)}, f"{project_uid} {h.uid} exported to {where}"

    act(c, "export", project_uid, uids, sel, {"into": dest}, single)


job.command("export")(_selection_options(job_export))


@job.command("import")
@click.argument("project_uid")
@click.argument("export_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--workspace", help="workspace to put the job in")
@pass_ctx
def job_import(c: Ctx, project_uid, export_dir, workspace) -> None:
    """Import an exported job folder as a new completed job (checksums checked first)."""
    j = c.api.find_project(project_uid).import_job(export_dir, workspace).model
    c.emit(_dump(j), f"{j.project_uid} {j.uid} imported from {j.imported_from}")


@job.command("clone-chain")
@click.argument("project_uid")
@click.argument("first")
@click.argument("last")
@click.option("--to", "to_workspace", help="workspace for the clones (default: each original's)")
@click.option("--new-workspace", help="make a workspace with this title for the clones")
@pass_ctx
def job_clone_chain(c: Ctx, project_uid, first, last, to_workspace, new_workspace) -> None:
    """Clone every job on the paths between FIRST and LAST, wired to each other's clones."""
    clones = c.api.find_project(project_uid).clone_chain(first, last, to_workspace, new_workspace)
    models = [h.model for h in clones]
    c.emit([_dump(j) for j in models], "\n".join(f"{j.project_uid} {j.uid} cloned from {j.cloned_from}"
                                                 for j in models))


@job.command("describe")
@click.argument("project_uid")
@click.argument("job_uid")
@click.argument("text")
@pass_ctx
def job_describe(c: Ctx, project_uid, job_uid, text) -> None:
    """Set a job's description."""
    j = c.api.find_project(project_uid).find_job(job_uid).set_description(text)
    c.emit(_dump(j), f"{j.project_uid} {j.uid} description set")


@job.command("operations")
@click.argument("project_uid")
@click.option("--limit", default=20, show_default=True)
@pass_ctx
def job_operations(c: Ctx, project_uid, limit) -> None:
    """Multi-job operations, newest first: who ran what, and how far each got."""
    ops = c.api.find_project(project_uid).operations(limit)
    rows = []
    for op in ops:
        done = sum(j["outcome"] == "done" for j in op["jobs"])
        failed = sum(j["outcome"] == "failed" for j in op["jobs"])
        state = "finished" if op["finished_at"] else "interrupted or running"
        rows.append({"id": op["id"], "action": op["action"], "by": op["by"], "jobs": f"{done}/{op['planned']}",
                     "failed": failed, "state": state})
    c.emit(ops, _table(rows, ["id", "action", "by", "jobs", "failed", "state"]))
