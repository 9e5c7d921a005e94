"""The job builder: create jobs, connect outputs to inputs, override slots, set params,
and say what still prevents a job from being queued.

Everything here runs inside a store transaction (``tx``) and changes jobs only while
they are ``building``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .errors import BuildError, NotFoundError
from .finals import descendants, why_protected
from .jobfile import ConnectionFiles
from .jobtypes import get_jobtype
from .jobtypes.spec import InputGroupSpec, JobTypeSpec
from .model import Connection, Job, OutputGroup, OutputResult, Project, SlotRef
from .status import JobStatus
from .store import Tx
from .text import one_line


def job_dir_abs(project: Project, job: Job) -> Path:
    """Absolute job directory, refusing any that would leave the project directory."""
    root = Path(project.project_dir).resolve()
    path = (root / job.job_dir).resolve()
    if root not in path.parents:
        raise BuildError(f"{job.ref}: job directory {job.job_dir!r} is outside project directory {root}")
    return path


def create_job(
    tx: Tx,
    project_uid: str,
    type_name: str,
    workspace_uid: str | None = None,
    title: str = "",
    params: dict[str, Any] | None = None,
    created_by: str = "",
) -> Job:
    """Create a job in ``building`` with its directory and its declared output groups.

    Raises:
        NotFoundError: unknown project, workspace or job type.
        BuildError: a param value that does not fit its declaration.
    """
    project = tx.get_project(project_uid)
    spec = get_jobtype(type_name)
    one_line(title, "a job title")
    workspaces = []
    if workspace_uid:
        tx.get_workspace(project_uid, workspace_uid)
        workspaces = [workspace_uid]
    values = checked_params(spec, params or {})
    uid = f"J{tx.next_number(f'{project_uid}/job')}"
    job = Job(
        uid=uid,
        project_uid=project_uid,
        workspace_uids=workspaces,
        type=spec.name,
        title=title or spec.title,
        created_by=created_by,
        params=values,
        outputs=declared_outputs(spec),
        job_dir=uid,
        resources_needed=spec.resources,
    )
    job.build_errors = build_errors(tx, job)
    path = job_dir_abs(project, job)
    path.mkdir(parents=True, exist_ok=True)
    try:
        tx.put_job(job)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return job


def declared_outputs(spec: JobTypeSpec) -> list[OutputGroup]:
    """Output groups as the job type declares them, before any run filled them."""
    return [
        OutputGroup(name=g.name, type=g.type, title=g.title, results=[OutputResult(name=r, type=r) for r in g.results])
        for g in spec.outputs
    ]


def checked_params(spec: JobTypeSpec, params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in params.items():
        p = spec.param(name)
        if p is None:
            known = ", ".join(q.name for q in spec.params) or "none"
            raise BuildError(f"{spec.name} has no param {name!r} (params: {known})")
        if value is None or value == "":
            continue  # unset: back to the default
        out[name] = p.coerce(value, spec.name)
    return out


def _require_building(job: Job, tx: Tx | None = None) -> None:
    """Only a building job changes, and (``tx`` given) never a final result or an ancestor
    of one: what the final job was built from must stay what it was."""
    if tx is not None:
        protected = why_protected(tx, job, "changed")
        if protected:
            raise BuildError(protected)
    if job.status != JobStatus.BUILDING:
        raise BuildError(f"{job.ref} is {job.status.value}; only building jobs can be changed (clear it first)")


def _input_spec(spec: JobTypeSpec, job: Job, input_name: str) -> InputGroupSpec:
    group = spec.input(input_name)
    if group is None:
        names = ", ".join(g.name for g in spec.inputs) or "none"
        raise BuildError(f"{job.ref} ({job.type}) has no input {input_name!r} (inputs: {names})")
    return group


def _output_group(parent: Job, group_name: str) -> OutputGroup:
    group = parent.output(group_name)
    if group is None:
        names = ", ".join(g.name for g in parent.outputs) or "none"
        raise BuildError(f"{parent.ref} ({parent.type}) has no output {group_name!r} (outputs: {names})")
    return group


def _check_parent(tx: Tx, job: Job, parent_uid: str) -> Job:
    if parent_uid == job.uid:
        raise BuildError(f"{job.ref}: a job cannot take its own outputs as input")
    parent = tx.get_job(job.project_uid, parent_uid)
    if parent_uid in {d.uid for d in descendants(tx, job)}:
        raise BuildError(f"{job.ref}: connecting {parent_uid} would make a cycle ({parent_uid} descends from {job.uid})")
    return parent


def connect(tx: Tx, project_uid: str, job_uid: str, input_name: str, parent_uid: str, group_name: str) -> Job:
    """Connect output group ``parent_uid.group_name`` to input ``input_name`` of a job.

    Raises:
        NotFoundError: unknown job.
        BuildError: the job is not building, the input or output does not exist, the
            item types differ, or the input already has its maximum number of groups.
    """
    job = tx.get_job(project_uid, job_uid)
    _require_building(job, tx)
    spec = get_jobtype(job.type)
    ispec = _input_spec(spec, job, input_name)
    parent = _check_parent(tx, job, parent_uid)
    group = _output_group(parent, group_name)
    if group.type != ispec.type:
        raise BuildError(
            f"cannot connect {parent_uid}.{group_name} to {job.uid}.{input_name}: "
            f"the output holds {group.type} items, the input takes {ispec.type}"
        )
    current = job.inputs.get(input_name, [])
    if ispec.count_max is not None and len(current) >= ispec.count_max:
        raise BuildError(
            f"{job.ref}: input {input_name!r} takes at most {ispec.count_max} group(s) and has "
            f"{len(current)}; disconnect one first"
        )
    if any(c.job_uid == parent_uid and c.group_name == group_name for c in current) and not ispec.repeat_allowed:
        raise BuildError(f"{job.ref}: {parent_uid}.{group_name} is already connected to {input_name!r}")
    job.inputs = {**job.inputs, input_name: [*current, Connection(job_uid=parent_uid, group_name=group_name)]}
    _save_with_links(tx, job)
    return job


def disconnect(tx: Tx, project_uid: str, job_uid: str, input_name: str, index: int | None = None) -> Job:
    """Remove connection ``index`` of an input (all of them when ``index`` is None)."""
    job = tx.get_job(project_uid, job_uid)
    _require_building(job, tx)
    _input_spec(get_jobtype(job.type), job, input_name)
    current = list(job.inputs.get(input_name, []))
    if index is None:
        current = []
    else:
        if not 0 <= index < len(current):
            raise BuildError(f"{job.ref}: input {input_name!r} has no connection #{index} ({len(current)} connected)")
        del current[index]
    inputs = dict(job.inputs)
    if current:
        inputs[input_name] = current
    else:
        inputs.pop(input_name, None)
    job.inputs = inputs
    _save_with_links(tx, job)
    return job


def override_slot(
    tx: Tx, project_uid: str, job_uid: str, input_name: str, index: int, slot: str, ref: SlotRef
) -> Job:
    """Replace one slot of one connection by a single result of another job (the Job
    Builder's way to, e.g., use downsampled particle images with the original poses).

    Raises:
        BuildError: unknown slot, missing result, or a result of another item type.
    """
    job = tx.get_job(project_uid, job_uid)
    _require_building(job, tx)
    spec = get_jobtype(job.type)
    ispec = _input_spec(spec, job, input_name)
    conns = list(job.inputs.get(input_name, []))
    if not 0 <= index < len(conns):
        raise BuildError(f"{job.ref}: input {input_name!r} has no connection #{index} ({len(conns)} connected)")
    if ispec.slot(slot) is None:
        names = ", ".join(s.name for s in ispec.slots)
        raise BuildError(f"{job.ref}: input {input_name!r} has no slot {slot!r} (slots: {names})")
    source = _check_parent(tx, job, ref.job_uid)
    group = _output_group(source, ref.group_name)
    if group.type != ispec.type:
        raise BuildError(
            f"cannot use {ref.job_uid}.{ref.group_name}.{ref.result_name} for slot {slot!r}: "
            f"it holds {group.type} items, input {input_name!r} takes {ispec.type}"
        )
    result = group.result(ref.result_name)
    if result is None:
        names = ", ".join(r.name for r in group.results) or "none"
        raise BuildError(f"{ref.job_uid}.{ref.group_name} has no result {ref.result_name!r} (results: {names})")
    if ref.version != -1 and ref.version % max(len(result.metafiles), 1) in result.cleared_versions:
        raise BuildError(f"{ref.job_uid}.{ref.group_name}.{ref.result_name} version {ref.version} was removed "
                         "as an intermediate result")
    conn = conns[index]
    conns[index] = conn.model_copy(update={"overrides": {**conn.overrides, slot: ref}})
    job.inputs = {**job.inputs, input_name: conns}
    _save_with_links(tx, job)
    return job


def set_params(tx: Tx, project_uid: str, job_uid: str, params: dict[str, Any]) -> Job:
    """Set (or, with None/"", unset) params of a building job; values are checked now."""
    job = tx.get_job(project_uid, job_uid)
    _require_building(job, tx)
    checked = checked_params(get_jobtype(job.type), params)
    merged = {k: v for k, v in job.params.items() if k not in params}
    merged.update(checked)
    job.params = merged
    job.build_errors = build_errors(tx, job)
    tx.put_job(job)
    return job


def _parent_uids(job: Job) -> list[str]:
    uids: dict[str, None] = {}
    for conns in job.inputs.values():
        for c in conns:
            uids.setdefault(c.job_uid, None)
            for ref in c.overrides.values():
                uids.setdefault(ref.job_uid, None)
    return list(uids)


def set_inputs(tx: Tx, job: Job, inputs: dict[str, list[Connection]]) -> None:
    """Give a building job these connections (a clone's), keeping parents/children in step."""
    _require_building(job)
    job.inputs = {name: [c.model_copy(deep=True) for c in conns] for name, conns in inputs.items()}
    _save_with_links(tx, job)


def _save_with_links(tx: Tx, job: Job) -> None:
    """Save a job after its connections changed, keeping parents/children in step."""
    new_parents = _parent_uids(job)
    for uid in set(job.parents) | set(new_parents):
        try:
            other = tx.get_job(job.project_uid, uid)
        except NotFoundError:
            continue
        children = [c for c in other.children if c != job.uid]
        if uid in new_parents:
            children.append(job.uid)
        if children != other.children:
            other.children = children
            tx.put_job(other)
    job.parents = new_parents
    job.build_errors = build_errors(tx, job)
    tx.put_job(job)


def _available_results(tx: Tx, group: OutputGroup, parent: Job, depth: int = 0) -> set[str]:
    """Results a connected group offers: what it produced, or (before it has run) what
    its job type declares it may produce, plus what it will pass through from its own
    inputs (so a whole chain can be built before any of it runs)."""
    if parent.status == JobStatus.COMPLETED:
        return {r.name for r in group.results if r.metafiles}
    offered = {r.name for r in group.results}
    try:
        ospec = get_jobtype(parent.type).output(group.name)
    except NotFoundError:
        return offered
    if ospec is not None and ospec.passthrough_input and depth < 50:
        for conn in parent.inputs.get(ospec.passthrough_input, []):
            try:
                grand = tx.get_job(parent.project_uid, conn.job_uid)
            except NotFoundError:
                continue
            source = grand.output(conn.group_name)
            if source is not None:
                offered |= _available_results(tx, source, grand, depth + 1)
    return offered


def build_errors(tx: Tx, job: Job) -> list[str]:
    """Everything that prevents queuing, one readable line each (empty when ready)."""
    spec = get_jobtype(job.type)
    errors: list[str] = []
    for ispec in spec.inputs:
        conns = job.inputs.get(ispec.name, [])
        if len(conns) < ispec.count_min:
            errors.append(f"input {ispec.name!r} needs at least {ispec.count_min} connected {ispec.type} group(s)")
        for i, conn in enumerate(conns):
            where = f"input {ispec.name!r} #{i} ({conn.job_uid}.{conn.group_name})"
            try:
                parent = tx.get_job(job.project_uid, conn.job_uid)
            except NotFoundError:
                errors.append(f"{where}: job {conn.job_uid} no longer exists")
                continue
            group = parent.output(conn.group_name)
            if group is None:
                errors.append(f"{where}: {conn.job_uid} has no output {conn.group_name!r}")
                continue
            offered = _available_results(tx, group, parent)
            for slot in ispec.slots:
                if slot.required and slot.name not in conn.overrides and slot.name not in offered:
                    errors.append(f"{where}: required slot {slot.name!r} is missing from that output")
    try:
        spec.resolve_params(tx.get_project(job.project_uid).default_params, job.params)
    except BuildError as err:
        errors.append(str(err))
    return errors


def resolve_inputs(tx: Tx, job: Job, project: Project) -> dict[str, list[ConnectionFiles]]:
    """Turn connections into absolute ``.cs`` paths for ``job.json``.

    Raises:
        BuildError: a parent is not completed, or a required result has no file.
    """
    spec = get_jobtype(job.type)
    root = Path(project.project_dir)
    resolved: dict[str, list[ConnectionFiles]] = {}
    for ispec in spec.inputs:
        entries = []
        for conn in job.inputs.get(ispec.name, []):
            parent = tx.get_job(job.project_uid, conn.job_uid)
            group = _output_group(parent, conn.group_name)
            slots: dict[str, str] = {}
            for slot in ispec.slots:
                ref = conn.overrides.get(slot.name)
                src_job = parent if ref is None else tx.get_job(job.project_uid, ref.job_uid)
                src_group = group if ref is None else _output_group(src_job, ref.group_name)
                result = src_group.result(slot.name if ref is None else ref.result_name)
                version = -1 if ref is None else ref.version
                if src_job.status != JobStatus.COMPLETED:
                    raise BuildError(f"{job.ref}: input {ispec.name!r} needs {src_job.uid}, which is {src_job.status.value}")
                if result is None or not result.metafiles:
                    if slot.required:
                        raise BuildError(
                            f"{job.ref}: input {ispec.name!r}: {src_job.uid}.{src_group.name} has no "
                            f"result {slot.name!r} (required slot)"
                        )
                    continue
                try:
                    slots[slot.name] = str(root / result.metafiles[version])
                    if version % len(result.metafiles) in result.cleared_versions:
                        raise BuildError(f"{job.ref}: {src_job.uid}.{src_group.name}.{result.name} version "
                                         f"{version} was removed as an intermediate result")
                except IndexError:
                    raise BuildError(
                        f"{job.ref}: {src_job.uid}.{src_group.name}.{result.name} has no version {version}"
                    ) from None
            passthrough = {
                r.name: str(root / r.metafiles[-1])
                for r in group.results
                if r.metafiles and r.name not in slots and ispec.slot(r.name) is None
            }
            entries.append(ConnectionFiles(job_uid=conn.job_uid, group_name=conn.group_name,
                                           slots=slots, passthrough=passthrough))
        resolved[ispec.name] = entries
    return resolved
