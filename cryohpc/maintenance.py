"""Keeping an instance whole: ``backup`` (SQLite's online backup, safe while the master
runs), ``restore`` (only with no master running; the backup is checked first), and
``doctor``, which checks the database, the site configs and the job directories against
the database, and says what it would repair without changing anything."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, CryohpcError, StoreError, UserError
from .instance import Instance
from .master import master_pid
from .status import JobStatus
from .store import SCHEMA_VERSION, check_database, copy_database


def backup(inst: Instance, dest: Path) -> Path:
    """Write a consistent copy of the instance's database to ``dest`` (a file)."""
    dest = Path(dest).expanduser().resolve()
    if dest.is_dir():
        raise UserError(f"{dest} is a directory; give the backup file's name")
    if dest.exists() and not dest.is_file():  # the copy is renamed into place: it would replace a device or FIFO
        raise UserError(f"{dest} is not a regular file; give the backup file's name")
    db = inst.paths.db.resolve()
    if dest in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        raise UserError(f"{dest} is the instance's own database; give the backup another name")
    inst.store.backup(dest)
    return dest


def restore(inst: Instance, source: Path) -> None:
    """Replace the instance's database with a backup.

    Raises:
        UserError: a master runs (stop it first), or the backup is damaged or newer.
    """
    source = Path(source).expanduser().resolve()
    if not source.is_file():
        raise UserError(f"{source}: no such backup file")
    pid = master_pid(inst)
    if pid is not None:
        raise UserError(f"a master is running (pid {pid}); stop it with 'cryohpc master stop' before restoring")
    verdict, version = check_database(source)
    if verdict != "ok":
        raise UserError(f"{source}: the backup fails SQLite's integrity check ({verdict[:200]})")
    if version > SCHEMA_VERSION:
        raise UserError(f"{source}: schema v{version} is newer than this cryohpc (v{SCHEMA_VERSION})")
    db = inst.paths.db
    staged = db.with_name(f".{db.name}.restore")
    copy_database(source, staged)
    inst.store.close()
    for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        extra.unlink(missing_ok=True)
    os.replace(staged, db)


@dataclass
class Report:
    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    would_repair: list[str] = field(default_factory=list)


def doctor(inst: Instance) -> Report:
    """Check everything an instance is made of; change nothing."""
    report = Report()
    try:
        verdict, version = check_database(inst.paths.db)
    except StoreError as err:
        report.problems.append(str(err))
        report.would_repair.append("restore the latest backup ('cryohpc restore FILE')")
        return report
    (report.ok if verdict == "ok" else report.problems).append(f"database integrity: {verdict[:300]}")
    if verdict != "ok":
        report.would_repair.append("restore the latest backup ('cryohpc restore FILE')")
    if version != SCHEMA_VERSION:
        report.problems.append(f"database schema v{version}, this cryohpc expects v{SCHEMA_VERSION}")
        if version < SCHEMA_VERSION:
            report.would_repair.append("apply the schema migrations (any command opening the database does)")
    else:
        report.ok.append(f"database schema v{version}")
    try:
        lanes = inst.lane_configs(strict=False)
    except CryohpcError as err:
        report.problems.append(f"site configs: {err}")
    else:
        report.ok.append(f"site configs: {len(lanes)} lane(s) load")
        report.problems += [f"site config: {p}" for p in inst.lane_problems]
    try:
        with inst.store.read() as tx:
            projects = tx.list_projects()
            jobs = {p.uid: tx.list_jobs(p.uid) for p in projects}
    except (StoreError, ConfigError) as err:
        report.problems.append(f"cannot read projects and jobs: {err}")
        return report
    running = master_pid(inst) is not None
    for project in projects:
        root = Path(project.project_dir)
        if not root.is_dir():
            report.problems.append(f"project {project.uid}: directory {root} is missing")
            continue
        known = set()
        for job in jobs[project.uid]:
            job_dir = root / job.job_dir
            known.add(job.job_dir)
            if job.status != JobStatus.BUILDING and not job_dir.is_dir():
                report.problems.append(f"{job.ref} is {job.status.value} but its directory {job_dir} is missing")
                if job.status.final:
                    report.would_repair.append(f"clear {job.ref} (it has no results left)")
            if job.status.active and not running:
                report.problems.append(f"{job.ref} is {job.status.value} and no master runs to follow it")
                report.would_repair.append("start the master ('cryohpc master start'): it follows or fails them")
        strays = sorted(d.name for d in root.glob("J*") if d.is_dir() and d.name not in known)
        if strays:
            report.problems.append(f"project {project.uid}: directories not in the database: {', '.join(strays)}")
            report.would_repair.append(f"move {', '.join(strays)} out of {root} (nothing refers to them)")
    if not report.problems:
        report.ok.append(f"{len(projects)} project(s), {sum(len(j) for j in jobs.values())} job(s) match their directories")
    report.would_repair = list(dict.fromkeys(report.would_repair))
    return report
