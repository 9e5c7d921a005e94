"""``cryohpc cleanup``, ``project refresh-size|archive|unarchive|detach|attach|set`` and
``db compact``: keeping projects small, and projects and the database movable."""

from __future__ import annotations

import sys
import time

import click

from ..api import CleanupOptions
from ..text import shown_lines
from .kit import Ctx, _dump, _table, confirm_or_refuse, pass_ctx
from .projects import project


def human(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _preview_text(pv) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(pv.measured_at)) if pv.measured_at else "never"
    lines = [f"project {pv.project_uid}" + (f", workspace {pv.workspace}" if pv.workspace else "")
             + f": {pv.project_jobs} jobs, {human(pv.project_bytes)} on disk (project measured: {when})"]
    lines += [f"notice: {n}" for n in pv.notices]
    est = pv.estimate()
    rows = [{"estimate": name, "jobs": est[key].jobs, "size": human(est[key].bytes),
             "of project": _percent(est[key].bytes, pv.project_bytes)}
            for name, key in (("to be cleared", "clear"), ("only trimmed (intermediate results)", "trim"),
                              ("to be deleted", "delete"))]
    rows.append({"estimate": "total freed", "jobs": len(pv.to_do), "size": human(pv.freed_bytes),
                 "of project": _percent(pv.freed_bytes, pv.project_bytes)})
    lines += ["", _table(rows, ["estimate", "jobs", "size", "of project"]),
              f"the project shrinks by {pv.shrink_percent:.1f}%"]
    for name, tab in pv.tabs.items():
        rows = [{name: key, "jobs": t.jobs, "size": human(t.bytes), "of scope": _percent(t.bytes, pv.scope_bytes)}
                for key, t in sorted(tab.items())]
        lines += ["", _table(rows, [name, "jobs", "size", "of scope"])]
    todo = [{"uid": d.job_uid, "type": d.type, "status": d.status, "action": d.action, "size": human(d.bytes),
             "why": d.why} for d in pv.to_do]
    if todo:
        lines += ["", _table(todo, ["uid", "type", "status", "action", "size", "why"])]
    left = [d for d in pv.decisions if not d.action and d.why.startswith(("left alone", "kept"))]
    lines += [f"{d.job_uid}: {d.why}" for d in left]
    return "\n".join(lines)


@click.command()
@click.argument("project_uid")
@click.option("--workspace", help="only this workspace's jobs (linked ones included)")
@click.option("--clear-preprocessing", is_flag=True, help="clear deterministic preprocessing jobs")
@click.option("--include-extraction", is_flag=True, help="with --clear-preprocessing: also jobs that write stacks")
@click.option("--clear-intermediate", is_flag=True, help="clear intermediate results of completed jobs")
@click.option("--clear-non-final", is_flag=True, help="clear jobs neither final nor ancestors of final")
@click.option("--delete-non-final", is_flag=True, help="clear and delete jobs neither final nor ancestors of final")
@click.option("--clear-killed", is_flag=True, help="clear killed jobs")
@click.option("--delete-killed", is_flag=True, help="clear and delete killed jobs")
@click.option("--clear-failed", is_flag=True, help="clear failed jobs")
@click.option("--delete-failed", is_flag=True, help="clear and delete failed jobs")
@click.option("--preview", is_flag=True, help="show what would be freed; change nothing")
@click.option("--measure", is_flag=True, help="measure every job it touches first (else only stale sizes)")
@click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation")
@pass_ctx
def cleanup(c: Ctx, project_uid, workspace, preview, measure, yes, **choices) -> None:
    """Shrink a project: clear or delete the jobs the options select, knowing first
    exactly what goes (CryoSPARC's Data Cleanup tool)."""
    options = CleanupOptions(**choices)
    handle = c.api.find_project(project_uid)
    pv = handle.cleanup_preview(options, workspace, measure,
                                progress=None if c.as_json else lambda s: click.echo(s, err=True))
    if preview or not pv.to_do:
        c.emit(pv.as_dict(), _preview_text(pv) + ("" if pv.to_do or not options.any() else "\nnothing to do"))
        return
    if not c.as_json:
        click.echo(shown_lines(_preview_text(pv)))
    confirm_or_refuse(yes, f"{len(pv.to_do)} job(s) would be cleared, trimmed or deleted; add --yes to go "
                           "ahead without a prompt (or --preview to see it only)",
                      f"free {human(pv.freed_bytes)} from {len(pv.to_do)} job(s)?")
    done = handle.cleanup(pv)
    skipped = [d for d in done.to_do if d.outcome != "done"]
    freed = sum(d.bytes for d in done.to_do if d.outcome == "done")
    c.emit(done.as_dict(), f"cleanup done: {len(done.to_do) - len(skipped)} job(s), {human(freed)} freed"
           + "".join(f"\n  {d.job_uid} skipped: {d.detail}" for d in skipped))
    if skipped:
        sys.exit(1)


@project.command("refresh-size")
@click.argument("project_uid")
@pass_ctx
def project_refresh_size(c: Ctx, project_uid) -> None:
    """Measure the project on disk (job directories and other files), job by job."""
    def progress(what, files, nbytes):
        if not c.as_json and what != "done":
            click.echo(f"{what}: {files} files, {human(nbytes)}", err=True)

    u = c.api.find_project(project_uid).refresh_size(progress)
    c.emit({"jobs_bytes": u.jobs, "other_bytes": u.other, "files": u.files, "jobs_measured": u.measured_jobs,
            "seconds": round(u.seconds, 3)},
           f"{project_uid}: {human(u.jobs + u.other)} on disk ({human(u.jobs)} in {u.measured_jobs} job directories, "
           f"{human(u.other)} other), {u.files} files, measured in {u.seconds:.1f} s")


@project.command("set")
@click.argument("project_uid")
@click.option("--intermediate-on-complete", type=click.Choice(["clear", "keep"]), required=True,
              help="clear jobs' intermediate results when they complete (default) or keep them")
@pass_ctx
def project_set(c: Ctx, project_uid, intermediate_on_complete) -> None:
    """Project settings."""
    p = c.api.find_project(project_uid).set_intermediate_on_complete(intermediate_on_complete == "clear")
    c.emit(_dump(p), f"{p.uid}: intermediate results {intermediate_on_complete} on completion")


@project.command("archive")
@click.argument("project_uid")
@pass_ctx
def project_archive(c: Ctx, project_uid) -> None:
    """Make a project read-only (its results stay browsable; its directory may then be moved)."""
    p = c.api.find_project(project_uid).archive()
    c.emit(_dump(p), f"{p.uid} archived (read-only)")


@project.command("unarchive")
@click.argument("project_uid")
@click.option("--dir", "new_dir", type=click.Path(file_okay=False), help="where the project directory is now")
@pass_ctx
def project_unarchive(c: Ctx, project_uid, new_dir) -> None:
    """Make an archived project writable again (at --dir if it was moved)."""
    p = c.api.find_project(project_uid).unarchive(new_dir)
    c.emit(_dump(p), f"{p.uid} unarchived at {p.project_dir}")


@project.command("detach")
@click.argument("project_uid")
@pass_ctx
def project_detach(c: Ctx, project_uid) -> None:
    """Write a project's records into its directory and remove it from this instance."""
    path = c.api.find_project(project_uid).detach()
    c.emit({"metadata": str(path)}, f"{project_uid} detached; its records are in {path}")


@project.command("attach")
@click.argument("project_dir", type=click.Path(exists=True, file_okay=False))
@pass_ctx
def project_attach(c: Ctx, project_dir) -> None:
    """Bring a detached project directory into this instance (a new project uid)."""
    p = c.api.attach_project(project_dir).model
    c.emit(_dump(p), f"{p.uid} attached from {p.project_dir}")


@click.group()
def db() -> None:
    """The instance database."""


@db.command("compact")
@pass_ctx
def db_compact(c: Ctx) -> None:
    """Reduce the database file to what it holds (after deletions, detaches)."""
    before, after = c.api.compact_database()
    c.emit({"bytes_before": before, "bytes_after": after},
           f"database: {human(before)} before, {human(after)} after ({human(before - after)} freed)")
