"""The master's SQLite database: projects, workspaces and jobs as JSON documents.

Documents are pydantic models serialised to JSON; the columns queries filter on
(status, lane, priority) are copied beside them. Every read-modify-write goes through
:meth:`Store.write`, which takes SQLite's write lock up front (``BEGIN IMMEDIATE``), so
concurrent CLI processes and the master serialise instead of losing updates. WAL mode
lets readers continue while one writer works.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .atomic import atomic_path
from .errors import ArchivedError, NotFoundError, StoreError
from .model import Job, Project, Workspace
from .status import JobStatus

BUSY_TIMEOUT_MS = 60_000

# Each entry moves the schema from version i to i+1. Never edit a released entry: append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE projects (uid TEXT PRIMARY KEY, doc TEXT NOT NULL);
    CREATE TABLE workspaces (
        project_uid TEXT NOT NULL, uid TEXT NOT NULL, doc TEXT NOT NULL,
        PRIMARY KEY (project_uid, uid));
    CREATE TABLE jobs (
        project_uid TEXT NOT NULL, uid TEXT NOT NULL, status TEXT NOT NULL,
        lane TEXT, priority INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0,
        doc TEXT NOT NULL, PRIMARY KEY (project_uid, uid));
    CREATE INDEX jobs_status ON jobs (status, lane);
    """,
    """
    CREATE TABLE worker_states (
        lane TEXT NOT NULL, target TEXT NOT NULL, state TEXT NOT NULL, since REAL NOT NULL,
        detail TEXT NOT NULL DEFAULT '', PRIMARY KEY (lane, target));
    """,
    # the master's per-pass queries touch columns, not documents: rev (bumped by every write,
    # so a reader re-parses only what changed), when the status was entered, a pending kill
    """
    ALTER TABLE jobs ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN status_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN kill_pending INTEGER NOT NULL DEFAULT 0;
    UPDATE jobs SET status_at = COALESCE(json_extract(doc, '$.status_times.' || status), 0),
        kill_pending = COALESCE(json_extract(doc, '$.kill_pending'), 0);
    CREATE INDEX jobs_status_at ON jobs (status, status_at);
    CREATE INDEX jobs_kill_pending ON jobs (kill_pending) WHERE kill_pending = 1;
    """,
    # job files to remove, recorded in the transaction that clears or deletes the job and
    # removed after it commits (by that command, a rerun, or the master before a launch);
    # the journal of multi-job operations, so an interrupted one can be finished
    """
    CREATE TABLE pending_removals (
        id INTEGER PRIMARY KEY, project_uid TEXT NOT NULL, job_uid TEXT NOT NULL,
        path TEXT NOT NULL, created_at REAL NOT NULL, claimed_by TEXT, claimed_at REAL);
    CREATE INDEX pending_removals_job ON pending_removals (project_uid, job_uid);
    CREATE TABLE operations (
        id INTEGER PRIMARY KEY, project_uid TEXT NOT NULL, action TEXT NOT NULL, args TEXT NOT NULL,
        by TEXT NOT NULL, pid INTEGER NOT NULL, started_at REAL NOT NULL, finished_at REAL,
        planned INTEGER NOT NULL);
    CREATE TABLE operation_jobs (
        operation_id INTEGER NOT NULL, job_uid TEXT NOT NULL, outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '', at REAL NOT NULL, PRIMARY KEY (operation_id, job_uid));
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _uid_number(uid: str) -> int:
    return int(uid[1:])


class Tx:
    """Operations inside one transaction; obtained from :meth:`Store.write` or :meth:`Store.read`."""

    def __init__(self, conn: sqlite3.Connection, writable: bool):
        self._c = conn
        self.writable = writable
        self._archived: dict[str, bool] = {}

    def _refuse_if_archived(self, project_uid: str) -> None:
        """An archived project is read-only: no write to its jobs or workspaces passes."""
        if project_uid not in self._archived:
            row = self._c.execute("SELECT json_extract(doc, '$.archived') FROM projects WHERE uid = ?",
                                  (project_uid,)).fetchone()
            self._archived[project_uid] = bool(row and row[0])
        if self._archived[project_uid]:
            raise ArchivedError(f"project {project_uid} is archived (read-only); "
                                f"'cryohpc project unarchive {project_uid}' first")

    # -- uids -------------------------------------------------------------------------
    def next_number(self, counter: str) -> int:
        """Increment and return a counter; numbers are never handed out twice."""
        cur = self._c.execute("UPDATE counters SET value = value + 1 WHERE name = ?", (counter,))
        if cur.rowcount == 0:
            self._c.execute("INSERT INTO counters (name, value) VALUES (?, 1)", (counter,))
        return self._c.execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()[0]

    # -- projects ---------------------------------------------------------------------
    def put_project(self, p: Project) -> None:
        self._archived[p.uid] = p.archived
        self._c.execute("INSERT OR REPLACE INTO projects (uid, doc) VALUES (?, ?)", (p.uid, p.model_dump_json()))

    def get_project(self, uid: str) -> Project:
        row = self._c.execute("SELECT doc FROM projects WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            raise NotFoundError(f"no project {uid} (see 'cryohpc project list')")
        return Project.model_validate_json(row[0])

    def list_projects(self) -> list[Project]:
        rows = self._c.execute("SELECT doc FROM projects").fetchall()
        return sorted((Project.model_validate_json(r[0]) for r in rows), key=lambda p: _uid_number(p.uid))

    def project_documents(self, uid: str) -> dict:
        """Everything the database holds of one project, as JSON-ready documents (detach)."""
        project = self.get_project(uid)
        jobs = self._c.execute("SELECT doc FROM jobs WHERE project_uid = ?", (uid,)).fetchall()
        counters = dict(self._c.execute("SELECT name, value FROM counters WHERE name LIKE ?",
                                        (f"{uid}/%",)).fetchall())
        return {"project": project.model_dump(mode="json"),
                "workspaces": [w.model_dump(mode="json") for w in self.list_workspaces(uid)],
                "jobs": [json.loads(r[0]) for r in jobs],
                "counters": {name.split("/", 1)[1]: value for name, value in counters.items()}}

    def drop_project(self, uid: str) -> None:
        """Remove a project's rows (its files are not touched)."""
        for sql in ("DELETE FROM jobs WHERE project_uid = ?", "DELETE FROM workspaces WHERE project_uid = ?",
                    "DELETE FROM pending_removals WHERE project_uid = ?",
                    "DELETE FROM operation_jobs WHERE operation_id IN (SELECT id FROM operations WHERE project_uid = ?)",
                    "DELETE FROM operations WHERE project_uid = ?", "DELETE FROM projects WHERE uid = ?"):
            self._c.execute(sql, (uid,))
        self._c.execute("DELETE FROM counters WHERE name LIKE ?", (f"{uid}/%",))
        self._archived.pop(uid, None)

    def raise_counter(self, counter: str, at_least: int) -> None:
        """Make sure ``next_number(counter)`` hands out numbers above ``at_least``."""
        self._c.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                        "value = MAX(value, excluded.value)", (counter, at_least))

    # -- workspaces -------------------------------------------------------------------
    def put_workspace(self, w: Workspace) -> None:
        self._refuse_if_archived(w.project_uid)
        self._c.execute(
            "INSERT OR REPLACE INTO workspaces (project_uid, uid, doc) VALUES (?, ?, ?)",
            (w.project_uid, w.uid, w.model_dump_json()),
        )

    def get_workspace(self, project_uid: str, uid: str) -> Workspace:
        row = self._c.execute(
            "SELECT doc FROM workspaces WHERE project_uid = ? AND uid = ?", (project_uid, uid)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no workspace {uid} in project {project_uid}")
        return Workspace.model_validate_json(row[0])

    def list_workspaces(self, project_uid: str) -> list[Workspace]:
        rows = self._c.execute("SELECT doc FROM workspaces WHERE project_uid = ?", (project_uid,)).fetchall()
        return sorted((Workspace.model_validate_json(r[0]) for r in rows), key=lambda w: _uid_number(w.uid))

    # -- jobs -------------------------------------------------------------------------
    def put_job(self, j: Job) -> None:
        self._refuse_if_archived(j.project_uid)
        j.updated_at = time.time()
        self._c.execute(
            "INSERT INTO jobs (project_uid, uid, status, lane, priority, deleted, doc, status_at, kill_pending)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project_uid, uid) DO UPDATE SET"
            " status = excluded.status, lane = excluded.lane, priority = excluded.priority,"
            " deleted = excluded.deleted, doc = excluded.doc, status_at = excluded.status_at,"
            " kill_pending = excluded.kill_pending, rev = jobs.rev + 1",
            (j.project_uid, j.uid, j.status.value, j.queued_lane, j.priority, int(j.deleted), j.model_dump_json(),
             j.status_times.get(j.status.value, 0.0), int(j.run.kill_pending)),
        )

    def job_revisions(self, statuses: list[JobStatus]) -> dict[tuple[str, str], int]:
        """(project, job) -> revision of the jobs in ``statuses``: columns only, so a reader
        that keeps parsed jobs re-reads just those whose revision moved."""
        rows = self._c.execute(
            f"SELECT project_uid, uid, rev FROM jobs WHERE deleted = 0 AND status IN ({','.join('?' * len(statuses))})",
            [s.value for s in statuses]).fetchall()
        return {(r[0], r[1]): r[2] for r in rows}

    def _rows_by_key(self, columns: str, keys: list[tuple[str, str]], where: str = "1") -> list[tuple]:
        """Rows of the given (project, job) keys, one query per few hundred keys."""
        rows: list[tuple] = []
        for i in range(0, len(keys), 400):
            part = keys[i:i + 400]
            match = " OR ".join(["(project_uid = ? AND uid = ?)"] * len(part))
            rows += self._c.execute(f"SELECT {columns} FROM jobs WHERE {where} AND ({match})",
                                    [x for k in part for x in k]).fetchall()
        return rows

    def jobs_by_key(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, Job]]:
        """Given jobs, with their revisions."""
        return {(r[0], r[1]): (r[2], Job.model_validate_json(r[3]))
                for r in self._rows_by_key("project_uid, uid, rev, doc", keys)}

    def job_statuses(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], JobStatus]:
        """Status column of the given jobs (a deleted job reads as absent)."""
        return {(r[0], r[1]): JobStatus(r[2])
                for r in self._rows_by_key("project_uid, uid, status", sorted(keys), "deleted = 0")}

    def jobs_entered_since(self, status: JobStatus, since: float) -> list[Job]:
        """Jobs that entered ``status`` after ``since`` (indexed: history costs nothing)."""
        rows = self._c.execute("SELECT doc FROM jobs WHERE status = ? AND status_at > ? AND deleted = 0",
                               (status.value, since)).fetchall()
        return [Job.model_validate_json(r[0]) for r in rows]

    def jobs_with_pending_kill(self) -> list[Job]:
        rows = self._c.execute("SELECT doc FROM jobs WHERE kill_pending = 1").fetchall()
        return [Job.model_validate_json(r[0]) for r in rows]

    def get_job(self, project_uid: str, uid: str, include_deleted: bool = False) -> Job:
        row = self._c.execute(
            "SELECT doc, deleted FROM jobs WHERE project_uid = ? AND uid = ?", (project_uid, uid)
        ).fetchone()
        if row is None or (row[1] and not include_deleted):
            self.get_project(project_uid)  # a missing project is the better message
            raise NotFoundError(f"no job {uid} in project {project_uid} (see 'cryohpc job list {project_uid}')")
        return Job.model_validate_json(row[0])

    def list_jobs(
        self,
        project_uid: str | None = None,
        statuses: list[JobStatus] | None = None,
        lane: str | None = None,
        include_deleted: bool = False,
    ) -> list[Job]:
        sql, args = "SELECT doc FROM jobs WHERE " + ("1" if include_deleted else "deleted = 0"), []
        if project_uid is not None:
            sql += " AND project_uid = ?"
            args.append(project_uid)
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += [s.value for s in statuses]
        if lane is not None:
            sql += " AND lane = ?"
            args.append(lane)
        rows = self._c.execute(sql, args).fetchall()
        jobs = [Job.model_validate_json(r[0]) for r in rows]
        return sorted(jobs, key=lambda j: (_uid_number(j.project_uid), _uid_number(j.uid)))


    def workspace_job_uids(self, project_uid: str, workspace_uid: str | None = None) -> list[str]:
        """The project's (or one workspace's) jobs, derived from each job's own workspace
        list, so the two can never disagree."""
        if workspace_uid is None:
            rows = self._c.execute("SELECT uid FROM jobs WHERE project_uid = ? AND deleted = 0",
                                   (project_uid,)).fetchall()
        else:
            rows = self._c.execute(
                "SELECT uid FROM jobs, json_each(jobs.doc, '$.workspace_uids') AS w"
                " WHERE project_uid = ? AND deleted = 0 AND w.value = ?", (project_uid, workspace_uid)).fetchall()
        return sorted((r[0] for r in rows), key=_uid_number)

    # -- files to remove after the transaction that decided it ---------------------------
    def add_removal(self, project_uid: str, job_uid: str, path: str) -> None:
        self._c.execute("INSERT INTO pending_removals (project_uid, job_uid, path, created_at) VALUES (?, ?, ?, ?)",
                        (project_uid, job_uid, path, time.time()))

    def removals(self, project_uid: str | None = None, job_uid: str | None = None,
                 older_than_s: float | None = None) -> list[tuple[int, str, str, str]]:
        """(id, project, job, path) of removals not yet done, oldest first."""
        sql, args = "SELECT id, project_uid, job_uid, path FROM pending_removals WHERE 1", []
        if older_than_s is not None:
            sql += " AND created_at < ?"
            args.append(time.time() - older_than_s)
        if project_uid is not None:
            sql += " AND project_uid = ?"
            args.append(project_uid)
        if job_uid is not None:
            sql += " AND job_uid = ?"
            args.append(job_uid)
        return [tuple(r) for r in self._c.execute(sql + " ORDER BY id", args).fetchall()]

    def claim_removals(self, me: str, claimable, project_uid: str | None = None, job_uid: str | None = None,
                       older_than_s: float | None = None) -> tuple[list[tuple[int, str, str, str]], list[str]]:
        """Claim the removals ``claimable(claimed_by, claimed_at)`` allows for ``me``;
        returns them and the claimers of those left to others."""
        mine, others = [], []
        for removal_id, p_uid, j_uid, path in self.removals(project_uid, job_uid, older_than_s):
            by, at = self._c.execute("SELECT claimed_by, claimed_at FROM pending_removals WHERE id = ?",
                                     (removal_id,)).fetchone()
            if by is None or by == me or claimable(by, at):
                self._c.execute("UPDATE pending_removals SET claimed_by = ?, claimed_at = ? WHERE id = ?",
                                (me, time.time(), removal_id))
                mine.append((removal_id, p_uid, j_uid, path))
            else:
                others.append(by)
        return mine, others

    def drop_removal(self, removal_id: int) -> None:
        self._c.execute("DELETE FROM pending_removals WHERE id = ?", (removal_id,))

    # -- the journal of multi-job operations ------------------------------------------
    def start_operation(self, project_uid: str, action: str, args: str, by: str, pid: int, planned: int) -> int:
        cur = self._c.execute("INSERT INTO operations (project_uid, action, args, by, pid, started_at, planned)"
                              " VALUES (?, ?, ?, ?, ?, ?, ?)", (project_uid, action, args, by, pid, time.time(),
                                                                planned))
        return int(cur.lastrowid)

    def record_outcome(self, operation_id: int, job_uid: str, outcome: str, detail: str = "") -> None:
        self._c.execute("INSERT OR REPLACE INTO operation_jobs (operation_id, job_uid, outcome, detail, at)"
                        " VALUES (?, ?, ?, ?, ?)", (operation_id, job_uid, outcome, detail, time.time()))

    def finish_operation(self, operation_id: int) -> None:
        self._c.execute("UPDATE operations SET finished_at = ? WHERE id = ?", (time.time(), operation_id))

    def operations(self, project_uid: str | None = None, limit: int = 20,
                   unfinished: bool = False) -> list[dict]:
        """Latest operations first, each with the outcome per job so far."""
        sql, args = "SELECT id, project_uid, action, args, by, pid, started_at, finished_at, planned" \
                    " FROM operations WHERE 1", []
        if project_uid is not None:
            sql += " AND project_uid = ?"
            args.append(project_uid)
        if unfinished:
            sql += " AND finished_at IS NULL"
        rows = self._c.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit]).fetchall()
        out = []
        for r in rows:
            jobs = self._c.execute("SELECT job_uid, outcome, detail, at FROM operation_jobs WHERE operation_id = ?"
                                   " ORDER BY at", (r[0],)).fetchall()
            out.append(dict(id=r[0], project_uid=r[1], action=r[2], args=r[3], by=r[4], pid=r[5], started_at=r[6],
                            finished_at=r[7], planned=r[8],
                            jobs=[dict(job_uid=j[0], outcome=j[1], detail=j[2], at=j[3]) for j in jobs]))
        return out

    # -- worker targets as the master last saw them ----------------------------------------
    def put_worker_state(self, lane: str, target: str, state: str, since: float, detail: str = "") -> None:
        self._c.execute("INSERT OR REPLACE INTO worker_states (lane, target, state, since, detail) "
                        "VALUES (?, ?, ?, ?, ?)", (lane, target, state, since, detail))

    def worker_states(self) -> dict[tuple[str, str], tuple[str, float, str]]:
        """(lane, target) -> (state, since, detail)."""
        rows = self._c.execute("SELECT lane, target, state, since, detail FROM worker_states").fetchall()
        return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


class Store:
    """One SQLite file; connections are per thread (sqlite3 objects are not shareable).
    Every SQLite failure (disk full, corrupt file, lock held too long) leaves as one
    ``StoreError`` naming the file, with the transaction rolled back."""

    def __init__(self, path: str | Path, on_commit: Callable[[], None] | None = None):
        """``on_commit`` runs after every committed write (the instance wakes the master)."""
        self.path = Path(path)
        self._local = threading.local()
        self.on_commit = on_commit
        with self.write() as _:
            pass  # opening applies migrations

    def _failed(self, err: sqlite3.Error) -> StoreError:
        hint = "; see 'cryohpc doctor'" if isinstance(err, sqlite3.DatabaseError) else ""
        return StoreError(f"database {self.path}: {err}{hint}")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
                self._migrate(conn)
            except sqlite3.Error as err:
                raise self._failed(err) from err
            self._local.conn = conn
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: database schema v{version} is newer than this cryohpc (v{SCHEMA_VERSION});"
                    " upgrade cryohpc"
                )
            for i in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[i].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A transaction holding the write lock from its start; rolled back on any error."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise self._failed(err) from err
        try:
            yield Tx(conn, writable=True)
            conn.execute("COMMIT")
        except BaseException as err:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.Error):
                raise self._failed(err) from err
            raise
        if self.on_commit is not None:
            self.on_commit()

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A consistent snapshot for reading (inside a write, that write's view)."""
        conn = self._conn()
        if conn.in_transaction:
            yield Tx(conn, writable=True)
            return
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as err:
            raise self._failed(err) from err
        try:
            yield Tx(conn, writable=False)
        except sqlite3.Error as err:
            raise self._failed(err) from err
        finally:
            with suppress(sqlite3.Error):
                conn.execute("COMMIT")

    def backup(self, dest: Path) -> None:
        """A consistent copy of the database in ``dest`` (SQLite's online backup: safe while
        the master and CLI commands write).

        Raises:
            StoreError, OutputFileError: the copy could not be made.
        """
        copy_database(self._conn(), dest)

    def compact(self) -> tuple[int, int]:
        """VACUUM the database (pages freed by deletions go back to the disk); the file's
        size before and after, write-ahead log included.

        Raises:
            StoreError: SQLite failed (another process held the database too long).
        """
        def size() -> int:
            return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

        before = size()
        conn = self._conn()
        try:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as err:
            raise self._failed(err) from err
        return before, size()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def copy_database(source: sqlite3.Connection | Path, dest: Path) -> None:
    """SQLite's online backup of ``source`` (an open connection, or a file opened read-only
    for the copy) into ``dest``, written whole or not at all.

    Raises:
        StoreError: SQLite failed; OutputFileError: ``dest`` could not be written.
    """
    with atomic_path(dest) as tmp:
        target = sqlite3.connect(tmp)
        opened = None
        try:
            if isinstance(source, Path):
                source = opened = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
            source.backup(target)
        except sqlite3.Error as err:
            raise StoreError(f"copying the database to {dest} failed: {err}") from err
        finally:
            target.close()
            if opened is not None:
                opened.close()


def check_database(path: Path) -> tuple[str, int]:
    """(integrity verdict, schema version) of a database file, opened read-only.

    Raises:
        StoreError: the file is not a usable SQLite database.
    """
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            verdict = "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check").fetchall())
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"{path}: not a usable cryohpc database ({err})") from err
    return verdict, version
