"""``cryohpc``: the command line, a thin layer over :mod:`cryohpc.api`.

Tables for people, ``--json`` for scripts. Errors print one line (``error: ...``) and
exit with status 2; ``job wait`` exits 0 only when the job completed.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from .clikit import Ctx, _dump, _parse_assignments, _table, pass_ctx
from .errors import CryohpcError

EXIT_ERROR = 2


def _parse_source(text: str, parts: int) -> list[str]:
    bits = text.split(".")
    if len(bits) != parts or not all(bits):
        shape = "J1.group" if parts == 2 else "J1.group.result"
        raise click.BadParameter(f"{text!r} is not of the form {shape}")
    return bits


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", envvar="CRYOHPC_HOME", type=click.Path(file_okay=False),
              help="instance directory (default $CRYOHPC_HOME or ~/.cryohpc)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.version_option(package_name="cryohpc")
@click.pass_context
def cli(ctx: click.Context, home: str | None, as_json: bool) -> None:
    """cryohpc: cryo-EM processing on HPC clusters."""
    ctx.obj = Ctx(home, as_json)


@cli.command()
@click.option("--projects-root", type=click.Path(file_okay=False), help="default parent of project directories")
@click.option("--poll-interval-s", type=float, help="master loop period")
@click.option("--heartbeat-interval-s", type=float, help="worker heartbeat period")
@click.option("--heartbeat-timeout-s", type=float, help="silence after which a job is failed")
@pass_ctx
def init(c: Ctx, projects_root, poll_interval_s, heartbeat_interval_s, heartbeat_timeout_s) -> None:
    """Create an instance (database, config) at --home."""
    from .api import Api

    settings = {k: v for k, v in dict(poll_interval_s=poll_interval_s, heartbeat_interval_s=heartbeat_interval_s,
                                      heartbeat_timeout_s=heartbeat_timeout_s).items() if v is not None}
    api = Api.init(c.home, projects_root, **settings)
    c._api = api
    cfg = api.instance.config
    c.emit({"home": str(api.instance.home), **cfg.model_dump()},
           f"instance at {api.instance.home} (projects under {cfg.projects_root})")


# -- projects and workspaces ------------------------------------------------------------
@cli.group()
def project() -> None:
    """Create and list projects."""


@project.command("create")
@click.option("--title", required=True)
@click.option("--dir", "project_dir", type=click.Path(file_okay=False), help="project directory (new or empty)")
@click.option("--description", default="")
@pass_ctx
def project_create(c: Ctx, title, project_dir, description) -> None:
    p = c.api.create_project(title, project_dir, description).model
    c.emit(_dump(p), f"{p.uid}  {p.project_dir}")


@project.command("set-defaults")
@click.argument("project_uid")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@pass_ctx
def project_set_defaults(c: Ctx, project_uid, assignments) -> None:
    """Project-wide param defaults, e.g. compute_use_ssd=false (an empty value removes one)."""
    values = {k: (v if v != "" else None) for k, v in _parse_assignments(assignments).items()}
    p = c.api.find_project(project_uid).set_default_params(**values)
    c.emit(_dump(p), f"{p.uid}: " + (", ".join(f"{k}={v}" for k, v in p.default_params.items()) or "no defaults"))


@project.command("set-vars")
@click.argument("project_uid")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@pass_ctx
def project_set_vars(c: Ctx, project_uid, assignments) -> None:
    """Project-level values of cluster lanes' custom variables (an empty value removes one)."""
    values = {k: (v if v != "" else None) for k, v in _parse_assignments(assignments).items()}
    p = c.api.find_project(project_uid).set_cluster_vars(**values)
    c.emit(_dump(p), f"{p.uid}: " + ", ".join(f"{k}={v}" for k, v in p.cluster_custom_vars.items()))


@project.command("list")
@pass_ctx
def project_list(c: Ctx) -> None:
    ps = c.api.projects()
    c.emit([_dump(p) for p in ps], _table([_dump(p) for p in ps], ["uid", "title", "project_dir"]))


@cli.group()
def workspace() -> None:
    """Create and list workspaces of a project."""


@workspace.command("create")
@click.argument("project_uid")
@click.option("--title", required=True)
@pass_ctx
def workspace_create(c: Ctx, project_uid, title) -> None:
    w = c.api.find_project(project_uid).create_workspace(title)
    c.emit(_dump(w), f"{w.project_uid} {w.uid}")


@workspace.command("list")
@click.argument("project_uid")
@pass_ctx
def workspace_list(c: Ctx, project_uid) -> None:
    ws = c.api.find_project(project_uid).workspaces()
    c.emit([_dump(w) for w in ws], _table([_dump(w) for w in ws], ["uid", "title"]))


# -- jobs -------------------------------------------------------------------------------
@cli.group()
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


@job.command("queue")
@click.argument("project_uid")
@click.argument("job_uid")
@click.option("--lane", help="lane name (default: local)")
@click.option("--priority", type=int, help="higher launches first")
@click.option("--target", help="worker target of an SSH node lane (default: the first with room)")
@click.option("--gpus", help="run on these GPU ids, e.g. 0,1")
@click.option("--var", "variables", multiple=True, help="custom variable of a cluster lane, name=value")
@pass_ctx
def job_queue(c: Ctx, project_uid, job_uid, lane, target, priority, gpus, variables) -> None:
    """Queue a job; the master launches it when its inputs are ready."""
    try:
        gpu_ids = [int(g) for g in gpus.split(",")] if gpus else None
    except ValueError:
        raise click.BadParameter(f"{gpus!r} is not a comma-separated list of GPU ids") from None
    j = c.api.find_project(project_uid).find_job(job_uid).queue(lane, priority, gpu_ids,
                                                                _parse_assignments(variables) or None, target)
    c.emit(_dump(j), f"{j.project_uid} {j.uid} queued to lane {j.queued_lane}"
                     + (f", worker {j.queued_target}" if j.queued_target else ""))


@job.command("kill")
@click.argument("project_uid")
@click.argument("job_uid")
@pass_ctx
def job_kill(c: Ctx, project_uid, job_uid) -> None:
    j = c.api.find_project(project_uid).find_job(job_uid).kill()
    c.emit(_dump(j), f"{j.project_uid} {j.uid} killed")


@job.command("restart")
@click.argument("project_uid")
@click.argument("job_uid")
@click.option("--lane", help="queue to another lane")
@pass_ctx
def job_restart(c: Ctx, project_uid, job_uid, lane) -> None:
    """Queue a killed or failed job again, keeping its directory (checkpoints are reused)."""
    j = c.api.find_project(project_uid).find_job(job_uid).restart(lane)
    c.emit(_dump(j), f"{j.project_uid} {j.uid} queued again to lane {j.queued_lane}")


@job.command("clear")
@click.argument("project_uid")
@click.argument("job_uid")
@pass_ctx
def job_clear(c: Ctx, project_uid, job_uid) -> None:
    """Return a completed/killed/failed job to building, deleting its outputs."""
    j = c.api.find_project(project_uid).find_job(job_uid).clear()
    c.emit(_dump(j), f"{j.project_uid} {j.uid} cleared")


def _job_row(j) -> dict[str, Any]:
    status = j.status.value + (" (unreachable)" if j.status.active and j.run.cluster_status == "unreachable" else "")
    return {"uid": j.uid, "type": j.type, "status": status, "queue": j.queue_status.value if j.queue_status else "",
            "lane": j.queued_lane or "", "title": j.title, "parents": ",".join(j.parents)}


@job.command("list")
@click.argument("project_uid")
@click.option("--status", "statuses", multiple=True, help="only jobs in this status (repeatable)")
@pass_ctx
def job_list(c: Ctx, project_uid, statuses) -> None:
    from .status import JobStatus

    try:
        wanted = [JobStatus(s) for s in statuses] or None
    except ValueError:
        raise click.BadParameter(f"status must be one of {', '.join(s.value for s in JobStatus)}") from None
    jobs = c.api.find_project(project_uid).jobs(wanted)
    c.emit([_dump(j) for j in jobs], _table([_job_row(j) for j in jobs],
                                             ["uid", "type", "status", "queue", "lane", "parents", "title"]))


@job.command("show")
@click.argument("project_uid")
@click.argument("job_uid")
@pass_ctx
def job_show(c: Ctx, project_uid, job_uid) -> None:
    j = c.api.find_project(project_uid).find_job(job_uid).model
    lines = [f"{j.project_uid} {j.uid}  {j.type}  \"{j.title}\"", f"status: {j.status.value}"
             + (f" ({j.queue_status.value})" if j.queue_status and j.status.value == "queued" else "")]
    if j.queued_lane:
        alloc = j.run.resources
        where = f"  on: {alloc.target}" if alloc and alloc.target else (
            f"  target: {j.queued_target}" if j.queued_target else "")
        lines.append(f"lane: {j.queued_lane}{where}  priority: {j.priority}")
    if j.run.launched_at:
        ident = f"cluster job {j.run.cluster_job_id}" if j.run.cluster_job_id else f"pid {j.run.pid} on {j.run.host}"
        code = f", exit code {j.run.exit_code}" if j.run.exit_code is not None else ""
        lines.append(f"run: lane {j.run.lane}, {ident}{code}")
    if j.status.active and (j.run.cluster_status or j.run.reason):
        reason = f" ({j.run.reason})" if j.run.reason else ""
        lines.append(f"lane reports: {j.run.cluster_status or ''}{reason}")
    elif j.status.value == "queued" and j.run.reason:
        lines.append(f"launch: {j.run.reason}")
    elif j.run.kill_pending:
        lines.append(f"kill pending: {j.run.reason}")
    if j.params:
        lines.append("params: " + ", ".join(f"{k}={v}" for k, v in j.params.items()))
    for name, conns in j.inputs.items():
        for i, conn in enumerate(conns):
            over = "".join(f" [{s}<-{r.job_uid}.{r.group_name}.{r.result_name}]" for s, r in conn.overrides.items())
            lines.append(f"input {name} #{i}: {conn.job_uid}.{conn.group_name}{over}")
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
    c.emit(_dump(j), "\n".join(lines))


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
        c.emit(h.events())
        return
    for line in h.log_lines(follow=follow):
        click.echo(line)


# -- job types, datasets, lanes ---------------------------------------------------------------
@cli.group()
def jobtypes() -> None:
    """The job types this instance can run."""


@jobtypes.command("list")
@pass_ctx
def jobtypes_list(c: Ctx) -> None:
    from .jobtypes import all_jobtypes

    specs = all_jobtypes()
    c.emit([s.model_dump(mode="json") for s in specs],
           _table([{"name": s.name, "category": s.category, "title": s.title} for s in specs],
                  ["name", "category", "title"]))


@jobtypes.command("show")
@click.argument("name")
@pass_ctx
def jobtypes_show(c: Ctx, name) -> None:
    """Inputs, slots, outputs and params of a job type: the job builder's view."""
    from .jobtypes import get_jobtype

    s = get_jobtype(name)
    lines = [f"{s.name}: {s.title} [{s.category}]", s.description, ""]
    for g in s.inputs:
        count = f"{g.count_min}..{g.count_max if g.count_max is not None else 'any'}"
        lines.append(f"input {g.name} ({g.type}, {count} groups{', repeats allowed' if g.repeat_allowed else ''})")
        for sl in g.slots:
            lines.append(f"    slot {sl.name}{'' if sl.required else ' (optional)'}  {sl.title}")
    for g in s.outputs:
        pt = f", passes through {g.passthrough_input}" if g.passthrough_input else ""
        lines.append(f"output {g.name} ({g.type}{pt}): {', '.join(g.results)}")
    lines.append("params:")
    for p in s.params:
        default = "required" if p.required else f"default {p.default!r}"
        choices = f" one of {'|'.join(p.choices)}" if p.choices else ""
        lines.append(f"    {p.name} ({p.type}{choices}, {default})  {p.help or p.title}")
    r = s.resources
    lines.append(f"resources: {r.cpus} CPU, {r.gpus} GPU, {r.ram_gb:g} GB RAM")
    c.emit(s.model_dump(mode="json"), "\n".join(lines))


@cli.group()
def dataset() -> None:
    """Inspect .cs files."""


@dataset.command("show")
@click.argument("path", type=click.Path())
@click.option("--rows", default=5, show_default=True, help="rows to print")
@pass_ctx
def dataset_show(c: Ctx, path, rows) -> None:
    """Fields, dtypes and the first rows of a .cs file (either format)."""
    from .dataset import Dataset

    ds = Dataset.load(path)
    descr = [{"field": d[0], "dtype": str(d[1]), "shape": list(d[2]) if len(d) > 2 else []} for d in ds.descr()]
    head = ds.array[:rows]
    preview = [{f: (v.decode() if isinstance(v, bytes) else v.tolist() if hasattr(v, "tolist") else v)
                for f, v in zip(ds.fields(), row, strict=True)} for row in head.tolist()]
    if c.as_json:
        c.emit({"path": path, "items": len(ds), "fields": descr, "rows": preview})
        return
    click.echo(f"{path}: {len(ds)} items, {len(descr)} fields")
    rows_out = []
    for d in descr:
        row = {"field": d["field"], "dtype": d["dtype"], "shape": "x".join(map(str, d["shape"]))}
        for i, item in enumerate(preview):
            row[f"[{i}]"] = _short(item[d["field"]])
        rows_out.append(row)
    click.echo(_table(rows_out, ["field", "dtype", "shape", *(f"[{i}]" for i in range(len(preview)))]))


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return str(v)


@cli.group()
def lane() -> None:
    """Lanes jobs can be queued to."""


@lane.command("list")
@pass_ctx
def lane_list(c: Ctx) -> None:
    lanes = c.api.instance.build_lanes()
    rows = []
    for name, ln in lanes.items():
        cfg = ln.cfg
        if ln.cfg.type == "cluster":
            rows.append({"name": name, "type": f"cluster/{cfg.kind}", "cpus": "-", "ram_gb": "-", "gpus": "-",
                         "title": cfg.title})
        else:
            cap = ln.capacity()
            rows.append({"name": name, "type": f"node/{cfg.kind}", "cpus": cap.cpus, "ram_gb": round(cap.ram_gb, 1),
                         "gpus": ",".join(map(str, cap.gpu_ids)) or "-", "title": cfg.title})
    c.emit(rows, _table(rows, ["name", "type", "cpus", "ram_gb", "gpus", "title"]))


def _lane(c: Ctx, name: str):
    from .errors import NotFoundError

    lanes = c.api.instance.build_lanes()
    if name not in lanes:
        raise NotFoundError(f"no lane {name!r} (lanes: {', '.join(sorted(lanes))})")
    return lanes[name]


@lane.command("show")
@click.argument("name")
@pass_ctx
def lane_show(c: Ctx, name) -> None:
    """A lane's settings and, for cluster lanes, its commands and custom variables."""
    ln = _lane(c, name)
    data = ln.cfg.model_dump(mode="json")
    lines = [f"{name}: {ln.cfg.type} lane" + (f" ({ln.cfg.kind})" if ln.cfg.type == "cluster" else "")]
    if ln.cfg.type == "cluster":
        lines.append(f"script template: {ln.template_name}")
        lines += [f"{purpose} command: {cmd}" for purpose, cmd in ln.commands.items()]
        for v in ln.cfg.custom_vars:
            value = ln.cfg.custom_values.get(v.name, v.default)
            lines.append(f"custom variable {v.name} ({v.type}{'|'.join([''] + v.choices) if v.choices else ''}"
                         f"{', required' if v.required else ''}) = {value!r}  {v.help}")
        data["commands"] = ln.commands
    elif ln.cfg.kind == "ssh":
        for target, cap in ln.targets().items():
            lines.append(f"worker {target}: {cap.cpus} CPUs, {cap.ram_gb:.1f} GB, GPUs {cap.gpu_ids or 'none'}")
        lines.append("(see 'cryohpc worker list')" if ln.cfg.workers else "no workers: add one with 'cryohpc worker connect'")
    else:
        cap = ln.capacity()
        lines.append(f"capacity: {cap.cpus} CPUs, {cap.ram_gb:.1f} GB, GPUs {cap.gpu_ids or 'none'}")
    c.emit(data, "\n".join(lines))


@lane.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@pass_ctx
def lane_validate(c: Ctx, paths) -> None:
    """Load site configs (the instance's, or the files given) and render every template
    and command for sample jobs; report the first problem with file, line and key."""
    from pathlib import Path

    from .lanes import build_lane
    from .lanes.siteconfig import WorkerTarget, load_site_config

    files = [Path(p) for p in paths] or sorted(c.api.instance.paths.site_configs.glob("*.y*ml"))
    names = []
    for f in files:
        for cfg in load_site_config(f):
            if isinstance(cfg, WorkerTarget):
                names.append(f"worker {cfg.name} of {cfg.lane}")
                continue
            build_lane(cfg, c.api.instance.config.instance_uid)
            names.append(cfg.name)
    if not paths:  # the instance's own files: targets must also join their lanes
        c.api.instance.lane_configs()
    c.emit({"valid": names}, f"{len(names)} lane(s)/worker(s) valid: {', '.join(names) or 'none'}")


@lane.command("test")
@click.argument("name")
@pass_ctx
def lane_test(c: Ctx, name) -> None:
    """Run a cluster lane's info command and, for SLURM, sbatch --test-only."""
    ln = _lane(c, name)
    if ln.cfg.type != "cluster":
        c.emit({"ok": True}, f"{name} is a node lane: capacity {ln.capacity().cpus} CPUs")
        return
    report = ln.test()
    c.emit({"ok": True, "report": report}, "\n".join(report))


@cli.group()
def cache() -> None:
    """The SSD cache of a node lane on this machine."""


def _lane_cache(c: Ctx, lane_name: str):
    from .cache import SsdCache, resolve_cache_path
    from .errors import UserError

    settings = _lane(c, lane_name).cache_settings()
    if not settings:
        raise UserError(f"lane {lane_name!r} has no SSD cache (cache_path)")
    return SsdCache(resolve_cache_path(settings["path"]), settings.get("quota_mb"), settings.get("reserve_mb", 0),
                    settings.get("lifetime_days", 30), settings.get("threads", 2))


@cache.command("status")
@click.option("--lane", "lane_name", default="local", show_default=True)
@pass_ctx
def cache_status(c: Ctx, lane_name) -> None:
    """Files in the cache, their size and when they were last used."""
    import time as _time

    cache_ = _lane_cache(c, lane_name)
    entries = sorted(cache_.entries(), key=lambda e: -e.get("last_used", 0))
    rows = [{"source": e["source"], "mb": round(e["size"] / 2**20, 1),
             "last_used": _time.strftime("%Y-%m-%d %H:%M", _time.localtime(e.get("last_used", 0)))} for e in entries]
    total = sum(e["size"] for e in entries) / 2**20
    c.emit({"path": str(cache_.root), "files": rows, "used_mb": total},
           f"{cache_.root}: {len(rows)} file(s), {total:.1f} MB\n" + _table(rows, ["source", "mb", "last_used"]))


@cache.command("clear")
@click.option("--lane", "lane_name", default="local", show_default=True)
@pass_ctx
def cache_clear(c: Ctx, lane_name) -> None:
    """Remove every cached file that no running job is using."""
    cache_ = _lane_cache(c, lane_name)
    removed = cache_.clear()
    c.emit({"removed": removed}, f"{cache_.root}: {removed} file(s) removed ({len(cache_.entries())} in use kept)")


# -- master -----------------------------------------------------------------------------------
@cli.group()
def master() -> None:
    """Start, stop and inspect the master that launches and follows jobs."""


@master.command("start")
@pass_ctx
def master_start(c: Ctx) -> None:
    """Start a master in the background (one per instance)."""
    from .master import start_master

    pid = start_master(c.api.instance)
    c.emit({"pid": pid}, f"master running (pid {pid}); log: {c.api.instance.paths.master_log}")


@master.command("stop")
@pass_ctx
def master_stop(c: Ctx) -> None:
    """Stop the master; running jobs go on and are picked up by the next master."""
    from .master import stop_master

    pid = stop_master(c.api.instance)
    c.emit({"stopped": pid}, "no master was running" if pid is None else f"master (pid {pid}) stopped")


@master.command("status")
@pass_ctx
def master_status(c: Ctx) -> None:
    from .master import master_pid

    pid = master_pid(c.api.instance)
    c.emit({"running": pid is not None, "pid": pid}, "master not running" if pid is None else f"master running (pid {pid})")
    sys.exit(0 if pid is not None else 1)


@master.command("run")
@pass_ctx
def master_run(c: Ctx) -> None:
    """Run the master in the foreground (for scripts, tests and service managers)."""
    from .master import run_master

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_master(c.api.instance)


from .cli_workers import worker  # noqa: E402  (registers on the group defined above)

cli.add_command(worker)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="cryohpc", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return EXIT_ERROR
    except CryohpcError as err:
        click.echo(f"error: {err}", err=True)
        return EXIT_ERROR
    except SystemExit as err:
        return err.code if isinstance(err.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
