"""``cryohpc job ...``: build, queue, follow and act on jobs."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from ..api import JobStatus
from ..text import shown
from .kit import Ctx, _dump, _parse_assignments, _parse_source, _short, _table, one_job, pass_ctx


@click.group()
def job() -> None:
    """Build, queue and follow jobs."""


@job.command("create")
@click.argument("project_uid")
@click.argument("job_type")
@click.option("-w", "--workspace", help="workspace uid, e.g. W1")
@click.option("--title", default="")
@click.option("-p", "--param", "params", multiple=True, help="name=value (repeatable)")
@pass_ctx
def job_create(c: Ctx, project_uid, job_type, workspace, title, params) -> None:
    """Create a job of JOB_TYPE in building state."""
    j = c.api.find_project(project_uid).create_job(job_type, workspace, title, _parse_assignments(params)).model
    text = f"{j.project_uid} {j.uid}"
    if j.build_errors:
        text += "\nbuild errors:\n  " + "\n  ".join(j.build_errors)
    c.emit(_dump(j), text)


@job.command("connect")
@click.argument("project_uid")
@click.argument("job_uid")
@click.argument("input_name")
@click.argument("source", metavar="J.GROUP")
@pass_ctx
def job_connect(c: Ctx, project_uid, job_uid, input_name, source) -> None:
    """Connect output group J.GROUP to input INPUT_NAME."""
    src_job, group = _parse_source(source, 2)
    j = c.api.find_project(project_uid).find_job(job_uid).connect(input_name, src_job, group)
    _show_build_state(c, j)


@job.command("connect-slot")
@click.argument("project_uid")
@click.argument("job_uid")
@click.argument("input_name")
@click.argument("slot")
@click.argument("source", metavar="J.GROUP.RESULT")
@click.option("--index", default=0, show_default=True, help="which connection of the input")
@click.option("--version", default=-1, show_default=True, help="result version (-1 = latest)")
@pass_ctx
def job_connect_slot(c: Ctx, project_uid, job_uid, input_name, slot, source, index, version) -> None:
    """Override one SLOT of a connection with a single result of another job."""
    src_job, group, result = _parse_source(source, 3)
    h = c.api.find_project(project_uid).find_job(job_uid)
    _show_build_state(c, h.connect_slot(input_name, slot, src_job, group, result, index, version))


@job.command("disconnect")
@click.argument("project_uid")
@click.argument("job_uid")
@click.argument("input_name")
@click.option("--index", type=int, help="which connection (default: all)")
@pass_ctx
def job_disconnect(c: Ctx, project_uid, job_uid, input_name, index) -> None:
    _show_build_state(c, c.api.find_project(project_uid).find_job(job_uid).disconnect(input_name, index))


@job.command("set")
@click.argument("project_uid")
@click.argument("job_uid")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@pass_ctx
def job_set(c: Ctx, project_uid, job_uid, assignments) -> None:
    """Set params (an empty value restores the default)."""
    _show_build_state(c, c.api.find_project(project_uid).find_job(job_uid).set_params(**_parse_assignments(assignments)))


def _show_build_state(c: Ctx, j) -> None:
    text = f"{j.project_uid} {j.uid}: " + ("ready to queue" if not j.build_errors else
                                            "build errors:\n  " + "\n  ".join(j.build_errors))
    c.emit(_dump(j), text)


def elapsed(seconds: float) -> str:
    """``3d 4h``, ``2h 05m``, ``4m 10s``, ``12s``: the time a job has been in its status."""
    s = int(max(0, seconds))
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def in_status_for(j) -> str:
    since = j.status_times.get(j.status.value) or j.created_at
    return elapsed(time.time() - since)


def _job_row(j) -> dict[str, Any]:
    status = j.status.value + (" (unreachable)" if j.status.active and j.run.cluster_status == "unreachable" else "")
    waiting = j.queue_status.value if j.queue_status and j.status == JobStatus.QUEUED else ""
    return {"uid": j.uid, "type": j.type, "status": status, "queue": waiting, "elapsed": in_status_for(j),
            "lane": j.queued_lane or "", "title": j.title, "parents": ",".join(j.parents)}


@job.command("list")
@click.argument("project_uid")
@click.option("--status", "statuses", multiple=True, help="only jobs in this status (repeatable)")
@click.option("--lane", help="only jobs queued to this lane")
@click.option("--workspace", help="only jobs of this workspace (W1...)")
@click.option("--tag", help="only jobs with this tag")
@click.option("--type", "job_type", help="only jobs of this type")
@pass_ctx
def job_list(c: Ctx, project_uid, statuses, lane, workspace, tag, job_type) -> None:
    """A project's jobs, with the time each has been in its status (ELAPSED)."""
    try:
        wanted = [JobStatus(s) for s in statuses] or None
    except ValueError:
        raise click.BadParameter(f"status must be one of {', '.join(s.value for s in JobStatus)}") from None
    jobs = c.api.find_project(project_uid).jobs(wanted, lane=lane, workspace=workspace, tag=tag, type=job_type)
    c.emit([_dump(j) for j in jobs], _table([_job_row(j) for j in jobs],
                                             ["uid", "type", "status", "queue", "elapsed", "lane", "parents",
                                              "title"]))


@job.command("show")
@one_job
def job_show(c: Ctx, project_uid, job_uid) -> None:
    h = c.api.find_project(project_uid).find_job(job_uid)
    j = h.model
    lines = [f"{j.project_uid} {j.uid}  {j.type}  \"{shown(j.title)}\"", f"status: {j.status.value}"
             + (f" ({j.queue_status.value})" if j.queue_status and j.status.value == "queued" else "")]
    if j.queued_lane:
        alloc = j.run.resources
        where = f"  on: {alloc.target}" if alloc and alloc.target else (
            f"  target: {j.queued_target}" if j.queued_target else "")
        lines.append(f"lane: {j.queued_lane}{where}  priority: {j.priority}")
    if j.run.launched_at:
        ident = f"cluster job {j.run.cluster_job_id}" if j.run.cluster_job_id else f"pid {j.run.pid} on {j.run.host}"
        code = f", exit code {j.run.exit_code}" if j.run.exit_code is not None else ""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.run.launched_at))
        lines.append(f"run: lane {j.run.lane}, {ident}, {'submitted' if j.run.cluster_job_id else 'started'} "
                     f"{when}{code}")
    if j.run.cluster_job_id and j.run.cluster_status:
        reason = f" ({shown(j.run.reason)})" if j.run.reason and j.status.active else ""
        nodes = f" on {shown(j.run.nodes)}" if j.run.nodes else ""
        final = "" if j.run.cluster_final or j.status.active else " (last seen; final state not yet known)"
        lines.append(f"scheduler: {shown(j.run.cluster_status)}{reason}{nodes}{final}")
    elif j.status.active and (j.run.cluster_status or j.run.reason):
        reason = f" ({j.run.reason})" if j.run.reason else ""
        lines.append(f"lane reports: {j.run.cluster_status or ''}{reason}")
    elif j.status.value == "queued" and j.run.reason:
        lines.append(f"launch: {j.run.reason}")
    elif j.run.kill_pending:
        lines.append(f"kill pending: {j.run.reason}")
    if j.workspace_uids:
        lines.append(f"workspaces: {', '.join(j.workspace_uids)}")
    if j.is_final_result or j.is_ancestor_of_final_result:
        lines.append("final result" if j.is_final_result else "ancestor of a final result (cannot be deleted or changed)")
    if j.size_measured_at is not None:
        lines.append(f"size: {j.job_dir_size / 1e6:.1f} MB, intermediate results {j.intermediate_size / 1e6:.1f} MB "
                     f"(measured {time.strftime('%Y-%m-%d %H:%M', time.localtime(j.size_measured_at))})")
    if j.status.value == "building" and j.parents:
        waiting = h.cleared_ancestors()
        if waiting:
            lines.append(f"ancestors to run again first: {', '.join(waiting)} "
                         f"(cryohpc job queue {j.project_uid} {j.uid} --with-ancestors)")
    if j.tags:
        lines.append(f"tags: {', '.join(shown(t) for t in j.tags)}")
    for key, label in (("cloned_from", "cloned from"), ("imported_from", "imported from"),
                       ("last_exported_location", "last exported to")):
        if getattr(j, key):
            lines.append(f"{label}: {shown(str(getattr(j, key)))}")
    if j.description:
        lines += [f"description: {shown(line)}" for line in j.description.split("\n")]
    if j.params:
        lines.append("params: " + ", ".join(f"{k}={v}" for k, v in j.params.items()))
    gone = set(h.deleted_parents()) if j.parents else set()
    for name, conns in j.inputs.items():
        for i, conn in enumerate(conns):
            over = "".join(f" [{s}<-{r.job_uid}.{r.group_name}.{r.result_name}]" for s, r in conn.overrides.items())
            deleted = f" ({conn.job_uid} deleted)" if conn.job_uid in gone else ""
            lines.append(f"input {name} #{i}: {conn.job_uid}.{conn.group_name}{over}{deleted}")
    for g in j.outputs:
        res = ", ".join(r.name + (" (passthrough)" if r.passthrough else "") for r in g.results)
        lines.append(f"output {g.name} ({g.type}, {g.num_items} items): {res}")
        for key, value in g.summary.items():
            if not isinstance(value, list):
                lines.append(f"    {key}: {_short(value)}")
    if j.run.progress:
        lines.append(f"progress: {j.run.progress.get('done')}/{j.run.progress.get('total')} {j.run.progress.get('what', '')}")
    for e in j.build_errors:
        lines.append(f"build error: {e}")
    if j.status.value == "failed" and j.errors_run:
        lines.append(f"error: {j.errors_run[-1].message}")
    since_clear = j.runs[j.runs_before_clear:]
    if since_clear:
        lines.append(f"runs ({len(since_clear)}):")
        lines += ["  " + _run_line(r) for r in since_clear]
    c.emit(_dump(j), "\n".join(lines))


def _stamp(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _run_line(r) -> str:
    """One ended run: where, when, how it ended and why."""
    ident = f"cluster job {r.cluster_job_id}" if r.cluster_job_id else f"on {r.host or '?'}"
    nodes = f" on {shown(r.nodes)}" if r.nodes and r.cluster_job_id else ""
    verdict = f" [{shown(r.verdict)}]" if r.verdict else ""
    why = f": {shown(r.reason)}" if r.reason else ""
    if r.scheduler:
        s = r.scheduler
        why += (f" (scheduler: {s.get('elapsed_s', 0):.0f} s elapsed, {s.get('cpu_s', 0):.1f} s CPU, "
                f"MaxRSS {s.get('max_rss_bytes', 0) / 2**20:.0f} MiB, {shown(s.get('tres', ''))})")
    return (f"#{r.number} lane {r.lane} {ident}{nodes}, started {_stamp(r.started_at or r.launched_at)}, "
            f"ended {_stamp(r.ended_at)}, {r.state}{verdict}{why}")


@job.command("wait")
@click.argument("project_uid")
@click.argument("job_uid")
@click.option("--timeout-s", type=float, help="give up after this many seconds (exit 3)")
@pass_ctx
def job_wait(c: Ctx, project_uid, job_uid, timeout_s) -> None:
    """Wait until the job is done; exit 0 only if it completed."""
    h = c.api.find_project(project_uid).find_job(job_uid)
    try:
        status = h.wait(timeout_s)
    except TimeoutError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(3)
    j = h.model
    c.emit({"uid": j.uid, "status": status.value, "errors": [e.message for e in j.errors_run]},
           f"{j.project_uid} {j.uid} {status.value}" + (f": {j.errors_run[-1].message}"
                                                         if status.value == "failed" and j.errors_run else ""))
    sys.exit(0 if status.value == "completed" else 1)


@job.command("log")
@click.argument("project_uid")
@click.argument("job_uid")
@click.option("-f", "--follow", is_flag=True, help="keep printing until the job is done")
@pass_ctx
def job_log(c: Ctx, project_uid, job_uid, follow) -> None:
    h = c.api.find_project(project_uid).find_job(job_uid)
    if c.as_json:
        c.emit([e.model_dump(mode="json") for e in h.events()])
        return
    for line in h.log_lines(follow=follow):
        click.echo(line)
