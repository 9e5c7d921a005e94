"""Lanes' files as a site admin manages them: add a site config, remove a lane, dump one,
import a CryoSPARC cluster lane and export one back (CryoSPARC's ``cluster connect``,
``cluster remove`` and ``cluster dump``).

Nothing is written before it has been validated as the master would load it: the files
are put together in a scratch folder, loaded, rendered for sample jobs and linted, and
only then copied into ``site-configs/``. A lane with jobs queued or running is not removed.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_path
from .errors import ConfigError, NotFoundError, UserError
from .instance import Instance
from .lanes import build_lane
from .lanes.cryosparc_pair import (
    INFO_NAME,
    SCRIPT_NAME,
    Ported,
    export_pair,
    import_pair,
    write_ported,
)
from .lanes.siteconfig import ClusterLaneConfig, WorkerTarget, load_site_config
from .status import JobStatus


@dataclass
class Checked:
    """Lanes of a site-config file that load, with the warnings linting found."""

    names: list[str]
    warnings: list[str] = field(default_factory=list)
    templates: dict[str, str] = field(default_factory=dict)  # lane -> template file it uses, absolute


@contextmanager
def _editing(inst: Instance) -> Iterator[None]:
    """One site-config editor at a time (add, remove, import, worker connect)."""
    inst.paths.site_configs.mkdir(parents=True, exist_ok=True)
    with open(inst.paths.site_configs / ".lanes.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def check_file(inst: Instance, path: Path, *, replacing: Path | None = None) -> Checked:
    """Load a site-config file and build its lanes as the master would, templates looked
    for beside it and in the instance's ``templates/``; lint cluster lanes. Its lane names
    must not clash with the instance's other files (``replacing`` one of them excepted).

    Raises:
        ConfigError: the first problem, naming the file, line and key.
    """
    from .lanes.cluster import ClusterLane
    from .lanes.lint import lint

    path = path.resolve()
    out = Checked([])
    skip = {path, replacing.resolve() if replacing else path}
    existing = {n: c.source for n, c in inst.lane_configs(strict=False).items()
                if c.source and Path(c.source).resolve() not in skip}
    for cfg in load_site_config(path):
        if isinstance(cfg, WorkerTarget):
            out.names.append(f"worker {cfg.name} of {cfg.lane}")
            continue
        if cfg.name in existing:
            raise ConfigError(f"{path}: lane {cfg.name!r} is already defined in {existing[cfg.name]}")
        if cfg.name in out.names:
            raise ConfigError(f"{path}: lane {cfg.name!r} is defined twice")
        lane = build_lane(cfg, inst.config.instance_uid, [inst.paths.templates])
        out.names.append(cfg.name)
        if isinstance(lane, ClusterLane):
            out.templates[cfg.name] = lane.template_file()
            out.warnings += [f"lane {cfg.name}: {w}" for w in lint(lane)]
    return out


def add(inst: Instance, path: Path, *, replace: bool = False) -> tuple[Path, Checked]:
    """Copy a site-config file (and templates beside it that its lanes use) into the
    instance, after checking it.

    Raises:
        ConfigError: the file does not load or clashes with a lane already there.
        UserError: a file of that name is there (without ``replace``).
    """
    path = path.resolve()
    dest = inst.paths.site_configs / path.name
    with _editing(inst):
        if dest.resolve() == path:  # already the instance's: check it in place
            return dest, check_file(inst, path)
        if dest.exists() and not replace:
            raise UserError(f"{dest}: exists; use --replace to overwrite it, or rename {path.name}")
        checked = check_file(inst, path, replacing=dest)
        for template in checked.templates.values():
            source = Path(template)
            if source.parent == path.parent and (replace or not (inst.paths.site_configs / source.name).exists()):
                shutil.copyfile(source, inst.paths.site_configs / source.name)
        with atomic_path(dest) as tmp:
            shutil.copyfile(path, tmp)
    return dest, checked


def _active_jobs(inst: Instance, lane: str) -> list[str]:
    active = [s for s in JobStatus if s.active] + [JobStatus.QUEUED]
    with inst.store.read() as tx:
        return [f"{j.project_uid} {j.uid} ({j.status.value})" for j in tx.list_jobs(statuses=active, lane=lane)]


def remove(inst: Instance, name: str) -> str:
    """Remove a lane from its site config: the whole file when it holds only this lane.

    Raises:
        NotFoundError: no such lane in the instance's files.
        UserError: jobs are queued or running on it, or it is the built-in ``local``.
    """
    with _editing(inst):
        cfg = inst.lane_configs(strict=False).get(name)
        if cfg is None or not cfg.source:
            if name == "local":
                raise UserError("lane 'local' is built in (this machine); it has no site config to remove")
            raise NotFoundError(f"no lane {name!r} in {inst.paths.site_configs}")
        busy = _active_jobs(inst, name)
        if busy:
            raise UserError(f"lane {name!r} has jobs queued or running: {', '.join(busy[:10])}"
                            f"{' ...' if len(busy) > 10 else ''}; kill or requeue them first")
        source = Path(cfg.source)
        data = yaml.safe_load(source.read_text())
        rest = [e for e in data.get("lanes") or [] if not (isinstance(e, dict) and e.get("name") == name)]
        if not rest and not data.get("workers"):
            source.unlink()
            if isinstance(cfg, ClusterLaneConfig):
                beside = source.parent / cfg.script_template
                if beside.name == f"{name}.sh.j2" and beside.exists():
                    beside.unlink()
            return f"removed {source}"
        data["lanes"] = rest
        text = _without_entry(source.read_text(), name)
        kept = text is not None and yaml.safe_load(text) == data
        with atomic_path(source) as tmp:
            tmp.write_text(text if kept else yaml.safe_dump(data, sort_keys=False, width=200))
        return f"removed lane {name!r} from {source} (its other entries kept" + (")" if kept else "; comments in it were not)")


def _without_entry(text: str, name: str) -> str | None:
    """The file's text less lane ``name``'s entry (with the comment lines just above it),
    so the admin's comments and layout elsewhere stay; None where the lanes list is not in
    block style (one entry per ``-``), which the caller rewrites whole instead."""
    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        return None
    entries = next((v for k, v in root.value if k.value == "lanes"), None)
    if not isinstance(entries, yaml.SequenceNode) or entries.flow_style:
        return None
    for item in entries.value:
        names = [v.value for k, v in getattr(item, "value", []) if isinstance(k, yaml.ScalarNode) and k.value == "name"]
        if names != [name]:
            continue
        lines = text.splitlines(keepends=True)
        start, last = item.start_mark.line, _last_line(item)
        indent = len(lines[start]) - len(lines[start].lstrip())
        while start > 0 and lines[start - 1].lstrip().startswith("#") and \
                len(lines[start - 1]) - len(lines[start - 1].lstrip()) >= indent:
            start -= 1
        return "".join(lines[:start] + lines[last + 1:])
    return None


def _last_line(node: yaml.Node) -> int:
    """The last line holding a value of ``node`` (a block node's own end mark lies past
    the comments that follow it)."""
    if isinstance(node, yaml.MappingNode):
        return max(_last_line(v) for pair in node.value for v in pair) if node.value else node.start_mark.line
    if isinstance(node, yaml.SequenceNode) and not node.flow_style:
        return max(_last_line(v) for v in node.value) if node.value else node.start_mark.line
    end = node.end_mark
    return end.line if end.column > 0 else end.line - 1


def dump(inst: Instance, name: str) -> tuple[dict[str, Any], str | None, str | None]:
    """A lane's settings as a site config would hold them (defaults left out), and for a
    cluster lane its template's text and file.

    Raises:
        NotFoundError: no such lane.
    """
    lanes = inst.lane_configs(strict=False)
    if name not in lanes:
        raise inst.no_lane(name, lanes)
    cfg = lanes[name]
    data = cfg.model_dump(mode="json", exclude_defaults=True, exclude={"source"})
    data = {"name": cfg.name, "type": cfg.type, **{k: v for k, v in data.items() if k not in ("name", "type")}}
    if not isinstance(cfg, ClusterLaneConfig):
        return data, None, None
    lane = build_lane(cfg, inst.config.instance_uid, [inst.paths.templates])
    text, filename = lane.template_source()
    return data, text, filename


def port(inst: Instance, folder: Path, *, name: str | None = None, kind: str | None = None,
         values: dict[str, Any] | None = None, types: dict[str, str] | None = None) -> tuple[Ported, Checked]:
    """A CryoSPARC cluster folder as a cryohpc lane, checked as the master would load it
    (in a scratch folder: nothing is written to the instance).

    Raises:
        ConfigError: the pair cannot be read or the result does not load.
    """
    ported = import_pair(folder, name=name, kind=kind, values=values, types=types)
    with tempfile.TemporaryDirectory() as tmp:
        config_path, _ = write_ported(ported, Path(tmp))
        try:
            # an earlier import of this lane may be replaced: install() decides, with the lock held
            checked = check_file(inst, config_path, replacing=inst.paths.site_configs / config_path.name)
        except ConfigError as err:
            raise ConfigError(f"the lane imported from {folder} does not load: "
                              f"{str(err).replace(str(Path(tmp)), '<site-configs>')}") from None
    return ported, checked


def install(inst: Instance, ported: Ported, dest: Path | None = None, *, replace: bool = False) -> tuple[Path, Path]:
    """Write an imported lane's config and template beside each other (default: the
    instance's ``site-configs/``), checked again under the editor lock."""
    dest = dest or inst.paths.site_configs
    with _editing(inst):
        if dest.resolve() == inst.paths.site_configs.resolve():
            clash = inst.lane_configs(strict=False).get(ported.config["name"])
            if clash is not None and not (replace and clash.source
                                          and Path(clash.source).name == f"{ported.config['name']}.yaml"):
                raise UserError(f"lane {ported.config['name']!r} exists ({clash.source or 'built in'}); "
                                "choose another --name")
        return write_ported(ported, dest, replace=replace)


def export(inst: Instance, name: str, dest: Path, *, replace: bool = False) -> tuple[Path, Path, list[str]]:
    """Write a cluster lane as CryoSPARC's ``cluster_info.json`` and ``cluster_script.sh``.

    Raises:
        UserError: not a cluster lane, or the files exist (without ``replace``).
    """
    data, template, _ = dump(inst, name)
    if template is None:
        raise UserError(f"lane {name!r} is a node lane; CryoSPARC's cluster files describe cluster lanes only")
    info, script, warnings = export_pair(data, template)
    info_path, script_path = dest / INFO_NAME, dest / SCRIPT_NAME
    for p in (info_path, script_path):
        if p.exists() and not replace:
            raise UserError(f"{p}: exists; use --replace, or another --dir")
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_path(info_path) as tmp:
        tmp.write_text(json.dumps(info, indent=4) + "\n")
    with atomic_path(script_path) as tmp:
        tmp.write_text(script)
    return info_path, script_path, warnings
