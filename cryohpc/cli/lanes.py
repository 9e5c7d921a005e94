"""``cryohpc lane ...``: the lanes jobs can be queued to."""

from __future__ import annotations

from pathlib import Path

import click

from .kit import Ctx, _table, pass_ctx


@click.group()
def lane() -> None:
    """Lanes jobs can be queued to."""


@lane.command("list")
@pass_ctx
def lane_list(c: Ctx) -> None:
    lanes = c.api.lanes()
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
    for problem in c.api.lane_problems():  # broken files cost only their own lanes; say which
        click.echo(f"warning: site config problem (its lanes are left out): {problem}", err=True)


@lane.command("show")
@click.argument("name")
@pass_ctx
def lane_show(c: Ctx, name) -> None:
    """A lane's settings and, for cluster lanes, its commands and custom variables."""
    ln = c.api.lane(name)
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
    names = c.api.validate_site_configs([Path(p) for p in paths])
    c.emit({"valid": names}, f"{len(names)} lane(s)/worker(s) valid: {', '.join(names) or 'none'}")


@lane.command("test")
@click.argument("name")
@pass_ctx
def lane_test(c: Ctx, name) -> None:
    """Run a cluster lane's info command and, for SLURM, sbatch --test-only."""
    ln = c.api.lane(name)
    if ln.cfg.type != "cluster":
        c.emit({"ok": True}, f"{name} is a node lane: capacity {ln.capacity().cpus} CPUs")
        return
    report = ln.test()
    c.emit({"ok": True, "report": report}, "\n".join(report))
