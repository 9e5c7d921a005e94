"""``cryohpc lane ...``: the lanes jobs can be queued to."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click
import yaml

from ..named_files import read_named_file
from ..text import shown_lines
from .kit import Ctx, _parse_assignments, _table, confirm_or_refuse, pass_ctx


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
        click.echo(f"warning: site config problem (its lanes are left out): {shown_lines(problem)}", err=True)


@lane.command("show")
@click.argument("name")
@pass_ctx
def lane_show(c: Ctx, name) -> None:
    """Every setting that applies to a lane, defaults included, and where each custom
    variable's value comes from."""
    ln = c.api.lane(name)
    cfg = ln.cfg
    data = cfg.model_dump(mode="json")
    lines = [f"{name}: {cfg.type} lane ({cfg.kind})" + (f" - {cfg.title}" if cfg.title else ""),
             f"site config: {cfg.source or '(built in)'}"]
    cache = ln.cache_settings()
    if cfg.type == "cluster":
        data["template_file"] = ln.template_file()
        data["commands"] = ln.commands
        data["worker_command"] = shlex.join(ln.worker_command(Path("JOB_DIR"), 1))
        launcher = ln._launcher(2)  # a 2-rank job's: "<launcher> -n 2"
        data["mpi_launcher_used"] = shlex.join(launcher[:-2])
        lines += [f"script template: {data['template_file']}",
                  f"worker: {data['worker_command']}",
                  f"MPI launcher: {data['mpi_launcher_used']} -n RANKS"
                  + ("" if cfg.mpi_launcher else " (default: the one beside this Python)"),
                  f"poll interval: {cfg.poll_interval_s:g} s, command timeout: {cfg.command_timeout_s:g} s",
                  f"commands run: {'here' if not cfg.send_cmd else cfg.send_cmd if isinstance(cfg.send_cmd, str) else 'over SSH on ' + cfg.send_cmd.address}"]
        lines += [f"{purpose} command: {cmd}" + ("" if getattr(cfg, f'{purpose}_cmd', None) else " (default)")
                  for purpose, cmd in ln.commands.items()]
        for v in cfg.custom_vars:
            source = "lane" if v.name in cfg.custom_values else "default" if v.default is not None else "unset"
            value = cfg.custom_values.get(v.name, v.default)
            kind = v.type + ("|".join([""] + v.choices) if v.choices else "")
            lines.append(f"custom variable {v.name} ({kind}{', required' if v.required else ''}) = {value!r} "
                         f"[{source}; a project or job may set it]  {v.help}")
        if cfg.env:
            lines += [f"env {k}={v}" for k, v in cfg.env.items()]
    elif cfg.kind == "ssh":
        for target, cap in ln.targets().items():
            lines.append(f"worker {target}: {cap.cpus} CPUs, {cap.ram_gb:.1f} GB, GPUs {cap.gpu_ids or 'none'}")
        lines.append("(see 'cryohpc worker list')" if cfg.workers else "no workers: add one with 'cryohpc worker connect'")
        lines.append(f"poll interval: {cfg.poll_interval_s:g} s")
    else:
        cap = ln.capacity()
        lines.append(f"capacity: {cap.cpus} CPUs, {cap.ram_gb:.1f} GB, GPUs {cap.gpu_ids or 'none'}"
                     + (" (oversubscribe)" if cfg.oversubscribe else ""))
        lines.append(f"MPI launcher: {cfg.mpiexec or '(the one beside this Python)'}")
    if cache:
        lines.append(f"SSD cache: {cache['path']} (quota {cache['quota_mb'] or 'none'} MB, reserve "
                     f"{cache['reserve_mb']:g} MB, files unused {cache['lifetime_days']:g} days removed, "
                     f"{cache['threads']} copy threads)")
    else:
        lines.append("SSD cache: none (cache_path not set)")
    c.emit(data, "\n".join(lines))


@lane.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@pass_ctx
def lane_validate(c: Ctx, paths) -> None:
    """Load site configs (the instance's, or the files given, from any folder), render
    every template and command for sample jobs, and warn about what would fail when jobs
    run (each warning names the file and line)."""
    checked = c.api.validate_site_configs([Path(p) for p in paths])
    lines = [f"{len(checked.names)} lane(s)/worker(s) valid: {', '.join(checked.names) or 'none'}"]
    lines += [f"  {lane}: template {path}" for lane, path in checked.templates.items()]
    lines += [f"warning: {w}" for w in checked.warnings]
    c.emit({"valid": checked.names, "templates": checked.templates, "warnings": checked.warnings}, "\n".join(lines))


@lane.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--replace", is_flag=True, help="overwrite the instance's file of the same name")
@pass_ctx
def lane_add(c: Ctx, path, replace) -> None:
    """Check a site-config file and copy it, with the templates beside it, into the
    instance's site-configs/ (as CryoSPARC's 'cluster connect')."""
    dest, checked = c.api.add_lane_file(path, replace=replace)
    lines = [f"added {', '.join(checked.names) or 'nothing'} ({dest})"] + [f"warning: {w}" for w in checked.warnings]
    c.emit({"path": str(dest), "lanes": checked.names, "warnings": checked.warnings}, "\n".join(lines))


@lane.command("remove")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="do not ask")
@pass_ctx
def lane_remove(c: Ctx, name, yes) -> None:
    """Remove a lane's site config (refused while jobs are queued or running on it)."""
    confirm_or_refuse(yes, f"removing lane {name!r} needs --yes", f"Remove lane {name!r}?")
    done = c.api.remove_lane(name)
    c.emit({"removed": name, "detail": done}, done)


@lane.command("dump")
@click.argument("name")
@click.option("--dir", "dest", type=click.Path(file_okay=False), help="write NAME.yaml and its template here")
@pass_ctx
def lane_dump(c: Ctx, name, dest) -> None:
    """A lane's site config (settings that differ from the defaults) and its template."""
    data, template, template_file = c.api.dump_lane(name)
    text = yaml.safe_dump({"lanes": [data]}, sort_keys=False, width=200)
    if dest:
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.yaml").write_text(text)
        if template is not None:
            (out / Path(template_file).name).write_text(template)
        c.emit({"dir": str(out.resolve())}, f"wrote {out / (name + '.yaml')}"
               + (f" and {out / Path(template_file).name}" if template is not None else ""))
        return
    shown = text + (f"# template {template_file}:\n{template}" if template is not None else "")
    c.emit({"config": data, "template": template, "template_file": template_file}, shown.rstrip("\n"))


def _types(pairs: tuple[str, ...]) -> dict[str, str]:
    out = _parse_assignments(pairs)
    bad = {k: v for k, v in out.items() if v not in ("str", "int", "float", "bool")}
    if bad:
        raise click.BadParameter(f"{', '.join(f'{k}={v}' for k, v in bad.items())}: types are str, int, float, bool",
                                 param_hint="--type")
    return out


def _values(values_file: str | None, pairs: tuple[str, ...]) -> dict[str, str]:
    """CryoSPARC's "cluster configuration" key/value list: a JSON object or key=value lines."""
    out: dict[str, str] = {}
    if values_file:
        try:
            text = read_named_file(values_file, "CryoSPARC's cluster configuration values").decode("utf-8")
        except UnicodeDecodeError:
            raise click.BadParameter(f"{values_file}: not UTF-8 text", param_hint="--values") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            lines = [li.strip() for li in text.splitlines() if li.strip() and not li.lstrip().startswith("#")]
            data = _parse_assignments(tuple(lines))
        if not isinstance(data, dict):
            raise click.BadParameter(f"{values_file}: a JSON object or key=value lines", param_hint="--values")
        out.update({str(k): str(v) for k, v in data.items()})
    out.update(_parse_assignments(pairs))
    return out


@lane.command("import-cryosparc")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--name", help="lane name (default: the name in cluster_info.json)")
@click.option("--kind", type=click.Choice(["slurm", "pbs", "sge"]), help="scheduler (default: guessed)")
@click.option("--values", "values_file", type=click.Path(exists=True, dir_okay=False),
              help="CryoSPARC cluster configuration values: JSON object or key=value lines")
@click.option("--value", "value_pairs", multiple=True, help="a custom variable's default, NAME=VALUE")
@click.option("--type", "type_pairs", multiple=True, help="a custom variable's type, NAME=str|int|float|bool")
@click.option("--dir", "dest", type=click.Path(file_okay=False), help="write here instead of site-configs/")
@click.option("--replace", is_flag=True, help="overwrite an earlier import of the same name")
@click.option("--dry-run", is_flag=True, help="show the changes, write nothing")
@click.option("-y", "--yes", is_flag=True, help="write without asking")
@pass_ctx
def lane_import_cryosparc(c: Ctx, folder, name, kind, values_file, value_pairs, type_pairs, dest, replace, dry_run,
                          yes) -> None:
    """Port a CryoSPARC cluster lane (FOLDER holds cluster_info.json and cluster_script.sh):
    a site config and template beside each other, every change listed with its reason."""
    ported, checked = c.api.import_cryosparc(folder, name=name, kind=kind, values=_values(values_file, value_pairs),
                                             types=_types(type_pairs))
    summary = _port_summary(ported, checked)
    data = {"lane": ported.config, "changes": ported.changes, "warnings": checked.warnings + ported.warnings,
            "script_changes": [vars(ch) for ch in ported.script_changes], "guessed_types": ported.guessed_types}
    if dry_run:
        c.emit({**data, "written": []}, summary + "\n(dry run: nothing written)")
        return
    if not c.as_json:
        click.echo(shown_lines(summary))
    confirm_or_refuse(yes, "writing the imported lane needs --yes (or look first with --dry-run)",
                      "Write this lane (guessed types as shown)?")
    paths = c.api.install_ported(ported, dest, replace=replace)
    written = [str(p) for p in paths]
    c.emit({**data, "written": written}, f"wrote {written[0]}\n      {written[1]}"
           + ("" if dest else f"\nnext: cryohpc lane test {ported.config['name']} --submit"))


def _port_summary(ported, checked) -> str:
    cfg = ported.config
    lines = [f"lane {cfg['name']} ({cfg['kind']}), template {ported.template_name}", "settings:"]
    lines += [f"  {k}: {v}" for k, v in cfg.items() if k not in ("custom_vars", "cryosparc", "name", "kind")]
    lines.append("custom variables (type guessed unless given with --type; confirm or override):")
    for v in cfg.get("custom_vars", []):
        value = f"default {v['default']!r}" if "default" in v else "required (no value given)"
        guessed = " (guessed)" if v["name"] in ported.guessed_types else ""
        lines.append(f"  {v['name']}: {v['type']}{guessed}, {value}")
    if not cfg.get("custom_vars"):
        lines.append("  (none)")
    lines.append("changes:")
    lines += [f"  {ch}" for ch in ported.changes]
    for ch in ported.script_changes:
        lines.append(f"  {ported.template_name}:{ch.line}: {ch.why}")
        if ch.old is not None:
            lines.append(f"    - {ch.old}")
        lines.append(f"    + {ch.new}")
    lines += [f"warning: {w}" for w in ported.warnings + checked.warnings]
    return "\n".join(lines)


@lane.command("export-cryosparc")
@click.argument("name")
@click.option("--dir", "dest", type=click.Path(file_okay=False), default=".", show_default=True,
              help="folder for cluster_info.json and cluster_script.sh")
@click.option("--replace", is_flag=True, help="overwrite the files there")
@pass_ctx
def lane_export_cryosparc(c: Ctx, name, dest, replace) -> None:
    """Write a cluster lane as CryoSPARC's cluster_info.json and cluster_script.sh (for
    'cryosparcm cluster connect'), restoring what the import changed."""
    info, script, warnings = c.api.export_cryosparc(name, dest, replace=replace)
    c.emit({"written": [str(info), str(script)], "warnings": warnings},
           "\n".join([f"wrote {info}", f"      {script}"] + [f"warning: {w}" for w in warnings]))


@lane.command("test")
@click.argument("name")
@click.option("--var", "variables", multiple=True, help="custom variable, NAME=VALUE")
@click.option("--shape", "shapes", multiple=True,
              help="resources to try, e.g. cpus=8,gpus=2,ranks=2,ram_gb=64 (default: 1 CPU, a 2-GPU MPI job, "
                   "the largest node)")
@click.option("--submit", is_flag=True, help="also run a real tiny job through the lane, end to end")
@click.option("--dir", "folder", type=click.Path(file_okay=False),
              help="where --submit's job runs (the nodes must see it; default <projects_root>/.lane-tests)")
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True,
              help="seconds --submit waits for its job")
@click.option("--keep", is_flag=True, help="keep --submit's job directory")
@pass_ctx
def lane_test(c: Ctx, name, variables, shapes, submit, folder, timeout_s, keep) -> None:
    """Try a cluster lane as jobs will use it, each step timed: the info command, each
    shape rendered and test-submitted, and with --submit a real job (submitted, seen by
    the status query, exit code read, outputs back)."""
    report = c.api.test_lane(name, shapes=list(shapes), variables=_parse_assignments(variables), submit=submit,
                             folder=folder, timeout_s=timeout_s, keep=keep)
    c.emit({"ok": report.ok, "steps": [vars(s) for s in report.steps]},
           "\n".join(s.line() for s in report.steps) + f"\n{'lane ' + name + ' works' if report.ok else 'FAILED'}")
    if not report.ok:
        raise SystemExit(1)
