"""A project's life beyond processing: archive (read-only, may then be moved), detach
(its records written into its own directory and removed from the instance) and attach
(brought back, into this instance or another, with its jobs, workspaces, uids and
outputs). The project directory is the unit that travels: ``.cs`` files name their
stacks relative to it and jobs name their directories relative to it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from .atomic import atomic_path
from .errors import InputFileError, UserError
from .instance import Instance
from .model import Job, Project, Workspace, now
from .named_files import read_named_file
from .status import JobStatus
from .store import Tx
from .text import line_problem, one_line

PROJECT_MARKER = "cryohpc-project.json"
METADATA_DIR = "cryohpc-project"
METADATA_FILE = "metadata.json"
FORMAT = 1


def write_marker(project_dir: Path, instance: Instance, project_uid: str, detached: bool = False) -> None:
    """The file that says which instance a project directory belongs to."""
    with atomic_path(project_dir / PROJECT_MARKER) as tmp:
        tmp.write_text(json.dumps({"instance_uid": instance.config.instance_uid, "project_uid": project_uid,
                                   "instance_home": str(instance.home), "detached": detached}))


def _busy(tx: Tx, project_uid: str, doing: str) -> None:
    jobs = tx.list_jobs(project_uid, statuses=[JobStatus.QUEUED, JobStatus.LAUNCHED, JobStatus.STARTED,
                                               JobStatus.RUNNING, JobStatus.WAITING])
    if jobs:
        listed = ", ".join(f"{j.uid} ({j.status.value})" for j in jobs[:10])
        raise UserError(f"project {project_uid} cannot be {doing} while jobs are queued or running: {listed}; "
                        "kill them or let them finish")
    if tx.removals(project_uid):
        raise UserError(f"project {project_uid} cannot be {doing} while files of cleared or deleted jobs are still "
                        "being removed; try again in a minute")


def archive(inst: Instance, project_uid: str) -> Project:
    """Make a project read-only.

    Raises:
        UserError: already archived, or jobs are queued or running.
    """
    with inst.store.write() as tx:
        project = tx.get_project(project_uid)
        if project.archived:
            raise UserError(f"project {project_uid} is already archived")
        _busy(tx, project_uid, "archived")
        project.archived = True
        tx.put_project(project)
    return project


def unarchive(inst: Instance, project_uid: str, new_dir: str | None = None) -> Project:
    """Make an archived project writable again, at ``new_dir`` if it was moved there.

    Raises:
        UserError: not archived; ``new_dir`` does not hold this project (its marker file).
    """
    with inst.store.write() as tx:
        project = tx.get_project(project_uid)
        if not project.archived:
            raise UserError(f"project {project_uid} is not archived")
        if new_dir is not None:
            path = Path(one_line(str(new_dir), "a project directory")).expanduser().resolve()
            marker = _read_json(path / PROJECT_MARKER, "project marker")
            if marker.get("project_uid") != project_uid or marker.get("instance_uid") != inst.config.instance_uid:
                raise UserError(f"{path / PROJECT_MARKER} names project {marker.get('project_uid')} of instance "
                                f"{marker.get('instance_uid')}, not {project_uid} of this instance; "
                                "is this the directory the project was moved to?")
            refuse_overlap(tx, path, project_uid)
            project.project_dir = str(path)
        project.archived = False
        tx.put_project(project)
    return project


def refuse_overlap(tx: Tx, path: Path, except_uid: str | None = None) -> None:
    for other in tx.list_projects():
        theirs = Path(other.project_dir)
        if other.uid != except_uid and (path == theirs or theirs in path.parents or path in theirs.parents):
            raise UserError(f"project directory {path} overlaps project {other.uid}'s ({theirs}); "
                            "choose a directory outside every other project")


def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise InputFileError(f"{path}: no {what} there")
    try:
        data = json.loads(read_named_file(path, f"a {what}").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(f"{path}: not a readable {what} ({err})") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: not a {what} (a JSON object was expected)")
    return data


def detach(inst: Instance, project_uid: str) -> Path:
    """Write the project's records into ``<project>/cryohpc-project/metadata.json`` and
    remove the project from this instance. Returns the metadata file.

    Raises:
        UserError: jobs are queued or running, or files are still being removed.
    """
    with inst.store.read() as tx:
        _busy(tx, project_uid, "detached")
        docs = tx.project_documents(project_uid)
    root = Path(docs["project"]["project_dir"])
    target = root / METADATA_DIR / METADATA_FILE
    target.parent.mkdir(exist_ok=True)
    docs.update(format=FORMAT, detached_at=now(), instance_uid=inst.config.instance_uid)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(docs, indent=1))
    with inst.store.write() as tx:
        _busy(tx, project_uid, "detached")  # nothing was queued meanwhile
        if tx.project_documents(project_uid)["jobs"] != docs["jobs"]:
            raise UserError(f"project {project_uid} changed while it was being detached; try again")
        tx.drop_project(project_uid)
    write_marker(root, inst, project_uid, detached=True)
    return target


def attach(inst: Instance, project_dir: str) -> Project:
    """Bring a detached project into this instance under a new project uid; its jobs and
    workspaces keep theirs, and new jobs continue their numbering.

    Raises:
        InputFileError: no or unreadable metadata; UserError: the directory is attached
            to an instance, or overlaps a project of this one.
    """
    root = Path(one_line(str(project_dir), "a project directory")).expanduser().resolve()
    source = root / METADATA_DIR / METADATA_FILE
    marker = _read_json(root / PROJECT_MARKER, "project marker")
    if not marker.get("detached"):
        raise UserError(f"{root} belongs to project {marker.get('project_uid')} of instance "
                        f"{marker.get('instance_uid')} ({marker.get('instance_home')}); detach it there first")
    docs = _read_json(source, "detached project's metadata")
    if docs.get("format") != FORMAT:
        raise InputFileError(f"{source}: metadata format {docs.get('format')!r} is not one this cryohpc reads "
                             f"({FORMAT})")
    try:
        project = Project.model_validate(docs["project"])
        workspaces = [Workspace.model_validate(w) for w in docs["workspaces"]]
        jobs = [Job.model_validate(j) for j in docs["jobs"]]
        counters = {str(k): int(v) for k, v in docs.get("counters", {}).items()}
        numbers = {"job": [int(j.uid[1:]) for j in jobs], "workspace": [int(w.uid[1:]) for w in workspaces]}
    except (KeyError, TypeError, ValueError, ValidationError) as err:
        raise InputFileError(f"{source}: not a valid detached project ({str(err).splitlines()[0]})") from None
    for job in jobs:
        if not (root / job.job_dir).resolve().is_relative_to(root):
            raise InputFileError(f"{source}: job {job.uid} names directory {job.job_dir!r} outside the project")
        for name in (m for g in job.outputs for r in g.results for m in r.metafiles):
            if not (root / name).resolve().is_relative_to(root):  # jobs downstream would read it
                raise InputFileError(f"{source}: job {job.uid} names output file {name!r} outside the project")
        if job.status == JobStatus.QUEUED or job.status.active:
            raise InputFileError(f"{source}: job {job.uid} is recorded as {job.status.value}; a detached project's "
                                 "jobs are never queued or running")
    for what, text in [("project title", project.title), *((f"workspace {w.uid} title", w.title) for w in workspaces),
                       *((f"job {j.uid} title", j.title) for j in jobs),
                       *((f"job {j.uid} custom variable {k}", str(v)) for j in jobs
                         for k, v in j.cluster_job_custom_vars.items())]:
        problem = line_problem(text)
        if problem:
            raise InputFileError(f"{source}: {what} holds {problem}")
    with inst.store.write() as tx:
        refuse_overlap(tx, root)
        uid = f"P{tx.next_number('project')}"
        archived = project.archived
        project = project.model_copy(update={"uid": uid, "project_dir": str(root), "archived": False})
        tx.put_project(project)
        for w in workspaces:
            tx.put_workspace(w.model_copy(update={"project_uid": uid}))
        for job in jobs:
            tx.put_job(job.model_copy(update={"project_uid": uid}))
        for name, used in numbers.items():
            tx.raise_counter(f"{uid}/{name}", max([counters.get(name, 0), *used]))
        if archived:
            tx.put_project(project.model_copy(update={"archived": True}))
    write_marker(root, inst, uid)
    return project
