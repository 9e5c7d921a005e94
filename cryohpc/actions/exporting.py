"""Export and import of a job: a self-contained directory another project or instance
can import, after which the job's outputs connect like any job's.

An export holds ``job.json`` (type, params, outputs, where it came from), ``files/``
(the job's files, and under ``files/_referenced/`` every file its ``.cs`` outputs point
to outside the job, such as particle stacks), and ``manifest.json`` (size and SHA-256
of every file, written last: an export without it is incomplete). Paths inside the
exported ``.cs`` files are relative to ``files/``; importing makes them the new job's.
An import checks every path before it copies, and every checksum as it copies into a
hidden staging folder, which becomes the job's directory only when all are right; an
entry the manifest does not list is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np
from pydantic import ValidationError

from ..builder import checked_params, job_dir_abs
from ..dataset import Dataset
from ..errors import DatasetError, InputFileError, OutputFileError, UserError
from ..exitcode import SUPERVISOR_FILE
from ..instance import Instance
from ..jobfile import JOB_FILE
from ..jobtypes import get_jobtype
from ..model import Job, OutputGroup, now
from ..named_files import read_named_file
from ..status import JobStatus
from ..store import Tx
from .common import Refused, owner
from .context import ActionContext, Journal, journal_in

FORMAT = "cryohpc-exported-job"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EXPORT_DOC = "job.json"
REFERENCED = "_referenced"
SKIPPED = {JOB_FILE, SUPERVISOR_FILE, "worker.pid"}  # what only made sense on the exporting instance


def destination(project_dir: Path, job: Job, dest: str | os.PathLike | None = None,
                into: str | os.PathLike | None = None) -> Path:
    """``dest`` itself; else a folder named after the job in ``into``, or in the project's
    ``exports/jobs/`` (CryoSPARC's place for exports)."""
    if dest:
        return Path(dest).expanduser().resolve()
    parent = Path(into).expanduser().resolve() if into else project_dir / "exports" / "jobs"
    return parent / f"{job.project_uid}_{job.uid}_{job.type}"


@contextmanager
def _staged(folder: Path, what: str) -> Iterator[None]:
    """Work in a staging folder that the block renames into place; on any failure it is
    removed, so nothing half-written is ever found under the real name."""
    try:
        yield
    except OSError as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise OutputFileError(f"{what} failed: {err}") from err
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _path_fields(ds: Dataset) -> list[str]:
    return [f for f in ds.fields() if f.endswith("/path") and ds[f].dtype.kind == "S"]


def _with_paths(ds: Dataset, field: str, values: list[str]) -> Dataset:
    """``ds`` with one path column replaced (the new strings may be longer)."""
    others = {f: ds[f] for f in ds.fields()}
    others[field] = np.array([v.encode() for v in values])
    return Dataset.from_columns(others)


def check_export(ctx: ActionContext, tx: Tx, job: Job, dest: str | os.PathLike | None = None,
                 into: str | os.PathLike | None = None) -> str:
    if job.status != JobStatus.COMPLETED:
        raise Refused(f"{job.ref} is {job.status.value}; only completed jobs can be exported")
    project = tx.get_project(job.project_uid)
    where = destination(Path(project.project_dir), job, dest, into)
    if where.exists() and any(where.iterdir()):
        raise Refused(f"{job.ref}: export folder {where} exists and is not empty; remove it or choose another")
    return f"export to {where}"


def _export_files(job: Job, root: Path, job_dir: Path, files: Path) -> None:
    """Copy the job's files and what its outputs point to, with paths made relative."""
    prefix = job.job_dir.rstrip("/") + "/"
    skip = {job_dir / p for pattern in get_jobtype(job.type).intermediate for p in job_dir.glob(pattern)}
    for src in sorted(job_dir.rglob("*")):
        rel = src.relative_to(job_dir)
        if (rel.name in SKIPPED and len(rel.parts) == 1) or any(s == src or s in src.parents for s in skip) \
                or rel.parts[0].startswith(".") or not src.is_file():
            continue
        (files / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, files / rel)  # links (imported stacks) are copied as their data
    metafiles = {rel for g in job.outputs for r in g.results for i, rel in enumerate(r.metafiles)
                 if i not in r.cleared_versions}  # cleared intermediate versions are gone, and stay gone
    for meta in sorted(metafiles):
        if not meta.startswith(prefix) or not (root / meta).is_file():
            raise Refused(f"{job.ref}: output file {meta} is missing; the job cannot be exported")
        ds = Dataset.load(root / meta)
        for field in _path_fields(ds):
            values = []
            for value in ds.strings(field):
                if value.startswith(prefix):
                    values.append(value[len(prefix):])
                    continue
                posix = PurePosixPath(value)
                inside = PurePosixPath(REFERENCED, "_abs" if posix.is_absolute() else "",
                                       *[p for p in posix.parts if p != "/"])
                source = Path(value) if posix.is_absolute() else root / value
                if ".." in posix.parts or not source.is_file():
                    raise Refused(f"{job.ref}: {meta} field {field} names {value!r}, which is not a file "
                                  "that can be exported")
                target = files / inside
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                values.append(str(inside))
            ds = _with_paths(ds, field, values)
        ds.save(files / meta[len(prefix):])


def _relative_doc(job: Job, inst: Instance) -> dict:
    prefix = job.job_dir.rstrip("/") + "/"

    def rel(value):
        return value[len(prefix):] if isinstance(value, str) and value.startswith(prefix) else value

    outputs = []
    for g in job.outputs:
        d = g.model_dump(mode="json")
        for r in d["results"]:
            r["metafiles"] = [rel(m) for m in r["metafiles"]]
        d["summary"] = {k: rel(v) for k, v in d["summary"].items()}
        outputs.append(d)
    return {"format": FORMAT, "version": FORMAT_VERSION, "exported_at": now(), "exported_by": owner(),
            "source": {"instance_uid": inst.config.instance_uid, "host": socket.gethostname(),
                       "project_uid": job.project_uid, "job_uid": job.uid},
            "job": {"type": job.type, "title": job.title, "description": job.description, "tags": job.tags,
                    "params": job.params, "outputs": outputs, "completed_at": job.status_times.get("completed")}}


def export_job(inst: Instance, project_uid: str, job_uid: str, dest: str | os.PathLike | None = None,
               into: str | os.PathLike | None = None, *, ctx: ActionContext | None = None,
               journal: Journal | None = None) -> Path:
    """Write the export folder (whole or not at all) and return it.

    Raises:
        Refused: the job is not completed, an output file is missing, or ``dest`` is
            not empty. OutputFileError: the folder could not be written.
    """
    ctx = ctx or ActionContext(inst)
    with inst.store.read() as tx:
        job = tx.get_job(project_uid, job_uid)
        check_export(ctx, tx, job, dest, into)
        project = tx.get_project(project_uid)
    root = Path(project.project_dir)
    where = destination(root, job, dest, into)
    partial = where.parent / f".{where.name}.partial-{os.getpid()}"
    with _staged(partial, f"exporting {job.ref} to {where}"):
        where.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "files").mkdir(parents=True)
        _export_files(job, root, job_dir_abs(project, job), partial / "files")
        (partial / EXPORT_DOC).write_text(json.dumps(_relative_doc(job, inst), indent=2))
        manifest = {str(p.relative_to(partial)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                    for p in sorted(partial.rglob("*")) if p.is_file()}
        (partial / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": manifest}, indent=2))
        if where.exists():
            where.rmdir()  # checked empty above
        partial.rename(where)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        job.last_exported_at, job.last_exported_location = now(), str(where)
        journal_in(tx, journal)
        tx.put_job(job)
    return where


# -- import ---------------------------------------------------------------------------------
def _read_json(path: Path, raw: bytes | None = None) -> dict:
    if raw is None and not path.exists():
        raise InputFileError(f"{path}: missing; is {path.parent} a complete cryohpc job export?")
    try:
        data = json.loads((read_named_file(path, "a JSON file of a job export") if raw is None else raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InputFileError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputFileError(f"{path}: not a cryohpc job export (format {FORMAT!r} expected)")
    return data


def _safe_rel(value: str, where: str) -> PurePosixPath:
    p = PurePosixPath(value)
    if not value or p.is_absolute() or ".." in p.parts or "\x00" in value or p.parts[0] in (".",):
        raise InputFileError(f"{where}: path {value!r} leaves the export folder")
    return p


def verify_export(source: Path) -> tuple[dict, dict[str, dict]]:
    """The export's document and manifest; every listed path checked (inside the export,
    a regular file and not a link, of the listed size) and the document's checksum.
    The other files' checksums are checked as :func:`_copy_listed` reads them.

    Raises:
        InputFileError: naming the file whose size, checksum or path is wrong.
    """
    manifest = _read_json(source / MANIFEST)
    _read_json(source / EXPORT_DOC)  # a missing or foreign document is named before the manifest's flaws
    files = manifest.get("files")
    if not isinstance(files, dict) or EXPORT_DOC not in files:
        raise InputFileError(f"{source / MANIFEST}: no file list naming {EXPORT_DOC}")
    root = source.resolve()
    for rel, entry in files.items():
        _safe_rel(rel, str(source / MANIFEST))
        path = source / rel
        if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(root):
            raise InputFileError(f"{path}: listed in the manifest but missing (or a link)")
        if not isinstance(entry, dict) or path.stat().st_size != entry.get("bytes"):
            raise InputFileError(f"{path}: size or SHA-256 differs from the manifest; the export is damaged")
    doc = _read_json(source / EXPORT_DOC, _copy_checked(source / EXPORT_DOC, None, files[EXPORT_DOC]))
    return doc, files


def _copy_checked(src: Path, dst: Path | None, entry: dict) -> bytes:
    """Copy ``src`` to ``dst`` (or, with no ``dst``, return its bytes), refusing it unless
    it is still a regular file, not a link, whose bytes have the listed SHA-256: what is
    used is what was checked, even if the folder changes while the import runs."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise InputFileError(f"{src}: listed in the manifest but missing (or a link)") from None
    h, kept = hashlib.sha256(), []
    with os.fdopen(fd, "rb") as fin, (open(dst, "xb") if dst else contextlib.nullcontext()) as fout:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            raise InputFileError(f"{src}: listed in the manifest but not a regular file")
        for block in iter(lambda: fin.read(1 << 20), b""):
            h.update(block)
            if fout is None:
                kept.append(block)
            else:
                fout.write(block)
    if h.hexdigest() != entry.get("sha256"):
        raise InputFileError(f"{src}: size or SHA-256 differs from the manifest; the export is damaged")
    return b"".join(kept)


def _copy_listed(source: Path, staging: Path, files: dict[str, dict]) -> None:
    """The manifest's files under ``files/`` into ``staging``, each checked as it is
    copied, and nothing else: an entry the manifest does not list (a link to a folder, to
    another user's file, a loop) is never read."""
    staging.mkdir()
    for rel in sorted(files):
        parts = PurePosixPath(rel).parts
        if parts[0] != "files" or len(parts) < 2:
            continue
        target = staging.joinpath(*parts[1:])
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_checked(source / rel, target, files[rel])


def import_job(inst: Instance, project_uid: str, source: str | os.PathLike, workspace: str | None = None) -> Job:
    """Import an exported job as a new completed job of this project.

    Raises:
        InputFileError: the export is incomplete, damaged or unsafe (named).
        NotFoundError: unknown project, workspace or job type. BuildError: a bad param.
    """
    source = Path(source).expanduser().resolve()
    doc, files = verify_export(source)
    where = str(source / EXPORT_DOC)
    try:
        spec = get_jobtype(str(doc["job"]["type"]))
        params = checked_params(spec, dict(doc["job"].get("params") or {}))
        outputs = [OutputGroup.model_validate(g) for g in doc["job"]["outputs"]]
        origin = doc["source"]
        imported_from = f"{origin['project_uid']} {origin['job_uid']} of instance {origin['instance_uid']}"
    except (KeyError, TypeError, AttributeError, ValidationError) as err:
        raise InputFileError(f"{where}: malformed export document ({err})") from None
    for g in outputs:
        for r in g.results:
            for i, m in enumerate(r.metafiles):
                if f"files/{_safe_rel(m, where)}" not in files and i not in r.cleared_versions:
                    raise InputFileError(f"{where}: output {g.name}.{r.name} names {m!r}, which the export lacks")
    with inst.store.write() as tx:
        project = tx.get_project(project_uid)
        if workspace:
            tx.get_workspace(project_uid, workspace)
        uid = f"J{tx.next_number(f'{project_uid}/job')}"
    staging = Path(project.project_dir) / f".importing-{uid}"
    job = Job(uid=uid, project_uid=project_uid, workspace_uids=[workspace] if workspace else [], type=spec.name,
              title=str(doc["job"].get("title") or spec.title), description=str(doc["job"].get("description") or ""),
              created_by=owner(), params=params, job_dir=uid, imported_from=imported_from,
              status=JobStatus.COMPLETED, status_times={"completed": now()}, completed_count=1,
              tags=[str(t) for t in doc["job"].get("tags") or []])
    with _staged(staging, f"importing {source} into {project_uid}"):
        _copy_listed(source, staging, files)
        _rebase_cs(staging, uid, files, where)
        for g in outputs:
            for r in g.results:
                r.metafiles = [f"{uid}/{m}" for m in r.metafiles]
            g.summary = {k: f"{uid}/{v}" if isinstance(v, str) and f"files/{v}" in files else v
                         for k, v in g.summary.items()}
        job.outputs = outputs
        job.job_dir_size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        staging.rename(job_dir_abs(project, job))
    with inst.store.write() as tx:
        tx.put_job(job)
    return job


def _rebase_cs(staging: Path, uid: str, files: dict, where: str) -> None:
    """Point the imported ``.cs`` files' paths into the new job directory, refusing any
    that would lead outside the export."""
    for cs in sorted(staging.rglob("*.cs")):
        try:
            ds = Dataset.load(cs)
        except UserError:
            continue  # not a dataset the job's outputs name (those were checked by the manifest)
        changed = False
        for field in _path_fields(ds):
            values = []
            try:
                texts = ds.strings(field)
            except DatasetError as err:
                raise InputFileError(f"{where}: {cs.name}: {err}") from None
            for value in texts:
                rel = _safe_rel(value, f"{cs.name} field {field}")
                if f"files/{rel}" not in files:
                    raise InputFileError(f"{where}: {cs.name} field {field} names {value!r}, which the export lacks")
                values.append(f"{uid}/{rel}")
            ds = _with_paths(ds, field, values)
            changed = True
        if changed:
            ds.save(cs)
