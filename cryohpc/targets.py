"""Worker targets of SSH node lanes, registered from the command line
(``cryohpc worker connect|list|show|remove|test``), as ``cryosparcw connect`` does.

Targets live in site configs like everything else about lanes. The commands edit one
file, ``site-configs/workers.yaml``, and never an admin's hand-written file; a target
defined there is changed there. A change is validated against every site config before
the file is replaced (atomically), and ``connect`` first asks the machine itself over SSH
for its cores, memory and GPUs, so nothing unreachable or broken is recorded.
"""

from __future__ import annotations

import fcntl
import functools
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from .errors import NotFoundError, UserError
from .instance import Instance
from .lanes.siteconfig import NodeLaneConfig, WorkerTarget, load_lane_configs

T = TypeVar("T")
MANAGED_FILE = "workers.yaml"
HEADER = "# Written by 'cryohpc worker connect/remove'. Hand edits are kept, comments are not.\n"


def ssh_lanes(inst: Instance) -> dict[str, NodeLaneConfig]:
    """SSH node lanes as configured; a broken unrelated site config does not hide them."""
    return {n: c for n, c in inst.lane_configs(strict=False).items()
            if isinstance(c, NodeLaneConfig) and c.kind == "ssh"}


def find_target(inst: Instance, name: str, lane: str | None = None) -> WorkerTarget:
    """Raises: NotFoundError naming the targets there are."""
    found = [w for ln, c in ssh_lanes(inst).items() if lane in (None, ln) for w in c.workers
             if name in (w.name, w.host)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise UserError(f"{name!r} names targets of several lanes ({', '.join(w.lane for w in found)}); add --lane")
    known = [f"{w.name} ({ln})" for ln, c in ssh_lanes(inst).items() for w in c.workers]
    raise NotFoundError(f"no worker target {name!r} (targets: {', '.join(known) or 'none'})")


def _one_editor(fn: Callable[..., T]) -> Callable[..., T]:
    """Serialise read-modify-write of the managed file between concurrent commands."""

    @functools.wraps(fn)
    def wrapper(inst: Instance, *args: Any, **kwargs: Any) -> T:
        inst.paths.site_configs.mkdir(parents=True, exist_ok=True)
        with open(inst.paths.site_configs / f".{MANAGED_FILE}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return fn(inst, *args, **kwargs)

    return wrapper


def _target(**fields: Any) -> WorkerTarget:
    """Raises: UserError naming the option and what is wrong with its value."""
    try:
        return WorkerTarget(**fields)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(str(x) for x in e["loc"]) or "worker"
        raise UserError(f"worker setting {key}: {e['msg']} (got {e.get('input')!r})") from None


def _managed(inst: Instance) -> tuple[Path, dict]:
    path = inst.paths.site_configs / MANAGED_FILE
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    return path, data if isinstance(data, dict) else {}


def _others(data: dict, lane: str | None, name: str | None) -> list[dict]:
    """The managed file's worker entries except the one named."""
    return [w for w in data.get("workers") or [] if not (w.get("lane") == lane and WorkerTarget(**w).name == name)]


def _dump_target(w: WorkerTarget) -> dict[str, Any]:
    data = w.model_dump(mode="json", exclude_defaults=True, exclude={"source"})
    if data.get("name") == w.address:
        data.pop("name")
    return {"lane": w.lane, **{k: v for k, v in data.items() if k != "lane"}}


def _save(inst: Instance, data: dict) -> None:
    """Validate ``data`` as the managed file together with every other site config, then
    replace the file atomically; on error nothing changes."""
    folder = inst.paths.site_configs
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANAGED_FILE
    ordered = {k: data[k] for k in ("lanes", "workers") if data.get(k)}
    text = HEADER + yaml.safe_dump(ordered, sort_keys=False)
    tmp = folder / f".{MANAGED_FILE}.{os.getpid()}.tmp"
    tmp.write_text(text)
    try:
        check = folder / f".check-{os.getpid()}"
        check.mkdir()
        try:
            for f in [*folder.glob("*.yaml"), *folder.glob("*.yml")]:
                if f.name != MANAGED_FILE:
                    (check / f.name).symlink_to(f)
            (check / MANAGED_FILE).symlink_to(tmp)
            load_lane_configs([check])
        finally:
            for f in check.iterdir():
                f.unlink()
            check.rmdir()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@_one_editor
def connect(inst: Instance, lane: str, host: str, *, new_lane: bool = False, update: bool = False,
            probe: bool = True, no_ssd: bool = False, **settings: Any) -> tuple[WorkerTarget, dict]:
    """Register (or with ``update``, change) a worker target; returns it and what the
    machine reported. ``settings`` are WorkerTarget fields; None means "not given";
    ``no_ssd`` drops the target's SSD cache.

    Raises:
        UserError: unknown lane without ``new_lane``, a target already there without
            ``update``, one defined in an admin's file, or a failed probe.
        TransientError / SshRefused: the machine could not be reached or refused us.
    """
    given = {k: v for k, v in settings.items() if v is not None}
    lanes = inst.lane_configs()
    existing_lane = lanes.get(lane)
    if new_lane and existing_lane is not None:
        raise UserError(f"lane {lane!r} already exists; leave out --new-lane to add a target to it")
    if not new_lane:
        if existing_lane is None:
            raise NotFoundError(f"no lane {lane!r}; add --new-lane to create an SSH node lane of that name")
        if not (isinstance(existing_lane, NodeLaneConfig) and existing_lane.kind == "ssh"):
            raise UserError(f"lane {lane!r} is not a node lane of kind ssh; workers cannot join it")
    probe_cfg = _target(lane=lane, host=host, **given)
    current = next((w for w in (existing_lane.workers if existing_lane else []) if w.name == probe_cfg.name), None)
    if current is not None and not update:
        raise UserError(f"worker {probe_cfg.name} is already connected to lane {lane!r}; add --update to change it")
    if current is None and update:
        raise NotFoundError(f"worker {probe_cfg.name} is not connected to lane {lane!r}; leave out --update")
    managed_path, data = _managed(inst)
    if current is not None and not str(current.source or "").startswith(str(managed_path)):
        raise UserError(f"worker {current.name} is defined in {current.source}; change it there")
    merged = {**(_dump_target(current) if current else {}), **given, "lane": lane, "host": host}
    if no_ssd:
        merged = {k: v for k, v in merged.items() if not k.startswith("cache_")}
    target = _target(**merged)
    facts: dict = {}
    if probe:
        facts = probe_target(inst, target)
        detected = {"cpus": facts["cpus"], "ram_gb": facts["ram_gb"], "gpus": facts["gpus"]}
        target = _target(**{**detected, **merged})
    data["workers"] = [*_others(data, lane, target.name), _dump_target(target)]
    if new_lane:
        data["lanes"] = [*(data.get("lanes") or []), {"name": lane, "type": "node", "kind": "ssh",
                                                      "title": f"SSH workers ({lane})"}]
    _save(inst, data)
    return target, facts


def probe_target(inst: Instance, target: WorkerTarget) -> dict:
    """Ask the machine what it has; refuse a target that cannot run jobs: no cryohpc,
    the projects root not shared at the same path, an unusable cache folder.

    Raises:
        UserError: naming what is wrong there.
    """
    from .lanes.workers import RemoteCommandError, SshWorkerLane

    lane = SshWorkerLane(NodeLaneConfig(name=target.lane or "probe", kind="ssh", workers=[target]))
    root = Path(inst.config.projects_root)
    root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    marker = root / f".cryohpc-shared-{token}"
    marker.write_text(token)
    try:
        facts = lane.facts(target.name or target.address, shared_file=marker)
    except RemoteCommandError as err:
        raise UserError(f"{err}; is cryohpc installed there (python: {lane._python(target)})? "
                        f"Give its Python with --python") from err
    finally:
        marker.unlink(missing_ok=True)
    if facts.get("shared_token") != token:
        raise UserError(f"worker {target.name}: the projects root {root} is not shared with it at the same path "
                        f"({facts.get('shared_error', 'it reads another file there')}); job directories must be")
    if "cache_error" in facts:
        raise UserError(f"worker {target.name}: SSD cache folder is not usable: {facts['cache_error']}")
    for gpu in target.gpus:
        if facts.get("gpus") is not None and gpu not in facts["gpus"]:
            raise UserError(f"worker {target.name}: GPU {gpu} is not there (nvidia-smi lists {facts['gpus']})")
    return facts


def jobs_on(inst: Instance, target: WorkerTarget) -> list[str]:
    """Jobs whose worker runs (or was launched) on the target."""
    from .status import JobStatus

    active = [s for s in JobStatus if s.active]
    with inst.store.read() as tx:
        return [j.ref for j in tx.list_jobs(statuses=active, lane=target.lane)
                if j.run.resources and j.run.resources.target == target.name]


@_one_editor
def remove(inst: Instance, name: str, lane: str | None = None) -> WorkerTarget:
    """Raises: UserError for a target defined in an admin's file, or with jobs running."""
    target = find_target(inst, name, lane)
    managed_path, data = _managed(inst)
    if not str(target.source or "").startswith(str(managed_path)):
        raise UserError(f"worker {target.name} is defined in {target.source}; remove it there")
    busy = jobs_on(inst, target)
    if busy:
        raise UserError(f"worker {target.name} runs {', '.join(busy)}; kill or wait for them first")
    data["workers"] = _others(data, target.lane, target.name)
    _save(inst, data)
    return target
