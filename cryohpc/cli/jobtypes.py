"""``cryohpc jobtypes ...``: what the job builder offers."""

from __future__ import annotations

from pathlib import Path

import click

from .kit import Ctx, _table, pass_ctx


@click.group()
def jobtypes() -> None:
    """The job types this instance can run."""


@jobtypes.command("list")
@pass_ctx
def jobtypes_list(c: Ctx) -> None:
    specs = c.api.jobtypes()
    c.emit([s.model_dump(mode="json") for s in specs],
           _table([{"name": s.name, "category": s.category, "title": s.title} for s in specs],
                  ["name", "category", "title"]))


@jobtypes.command("show")
@click.argument("name")
@pass_ctx
def jobtypes_show(c: Ctx, name) -> None:
    """Inputs, slots, outputs and params of a job type: the job builder's view."""
    s = c.api.jobtype(name)
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
    if s.declared:
        program = s.declared["program"]
        mpi = f", MPI: {program['mpi_executable']}" if program.get("mpi_executable") else ""
        lines.append(f"program: {program['executable']}{mpi}; declared in {s.declared_in}")
    c.emit(s.model_dump(mode="json"), "\n".join(lines))


@jobtypes.command("validate")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def jobtypes_validate(c: Ctx, files) -> None:
    """Check declared job types: the site's (<home>/jobtypes/*.yaml) or the FILES given.
    Exits 1 when one does not load, naming its file and line."""
    specs, problems = c.api.validate_jobtypes(list(files))
    lines = [f"ok: {s.name} ({s.declared_in})" for s in specs] + [f"error: {p}" for p in problems]
    c.emit({"ok": [s.name for s in specs], "errors": problems}, "\n".join(lines) or "no declared job types")
    if problems:
        raise SystemExit(1)
