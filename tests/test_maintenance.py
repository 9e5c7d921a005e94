"""Database and disk faults give one readable message; backup, restore and doctor."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
from conftest import cli

from cryohpc.api import Api
from cryohpc.errors import StoreError, UserError
from cryohpc.status import JobStatus


def test_backup_while_the_master_runs_then_restore(api, project, master, tmp_path):
    done = project.create_job("test_sleep", params={"seconds": 0.1})
    done.queue()
    assert done.wait(60) == JobStatus.COMPLETED
    out = cli(api.instance.home, "backup", str(tmp_path / "b.sqlite"), check=True)
    assert "backed up" in out.stdout and (tmp_path / "b.sqlite").is_file()
    later = project.create_job("test_sleep")  # made after the backup: gone after the restore
    with pytest.raises(UserError, match="a master is running"):
        api.restore(tmp_path / "b.sqlite")
    master.stop()
    cli(api.instance.home, "restore", str(tmp_path / "b.sqlite"), check=True)
    fresh = Api(api.instance.home)
    uids = [j.uid for j in fresh.find_project(project.uid).jobs()]
    assert done.uid in uids and later.uid not in uids
    assert fresh.find_project(project.uid).find_job(done.uid).status == JobStatus.COMPLETED
    master.start()


def test_a_backup_never_replaces_a_device_a_fifo_or_the_live_database(api, project, tmp_path):
    """The copy is renamed into place, so a destination that is not a regular file (as
    root, /dev/full itself) or the instance's own database would be replaced by it."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    db = api.instance.paths.db
    # (not /dev/null: were this to regress, a root CI would lose the device)
    for dest, says in [(fifo, "is not a regular file"), (db, "is the instance's own database"),
                       (db.with_name(db.name + "-wal"), "own database")]:
        proc = cli(api.instance.home, "backup", str(dest))
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert Api(api.instance.home).find_project(project.uid).uid == project.uid


def test_a_damaged_backup_is_refused(api, tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"SQLite format 3\x00" + bytes(5000))
    proc = cli(api.instance.home, "restore", str(bad))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "bad.sqlite" in proc.stderr


def test_a_corrupt_database_is_one_message_and_doctor_says_what_to_do(api, tmp_path):
    db = api.instance.paths.db
    api.instance.store.close()
    for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        extra.unlink(missing_ok=True)
    db.write_bytes(b"this is not a database, " * 200)
    proc = cli(api.instance.home, "project", "list")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and f"database {db}" in proc.stderr and "see 'cryohpc doctor'" in proc.stderr
    report = cli(api.instance.home, "doctor")
    assert report.returncode == 1 and "Traceback" not in report.stderr
    assert "problem:" in report.stdout and "would repair: restore the latest backup" in report.stdout


def test_a_full_database_fails_the_write_and_keeps_what_was_there(api, project):
    """Fault injection: SQLite's page limit makes the database 'full' for this connection."""
    project.create_job("test_sleep")
    conn = api.store._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError, match=r"database .*: database or disk is full"):
        for _ in range(200):
            project.create_job("test_sleep", title="x" * 2000)
    conn.execute("PRAGMA max_page_count = 1073741823")
    with api.store.read() as tx:
        jobs = tx.list_jobs(project.uid)
        counter = tx._c.execute("SELECT value FROM counters WHERE name = ?", (f"{project.uid}/job",)).fetchone()[0]
    assert counter == len(jobs)  # the failed write left no half-made job behind
    assert sorted(d.name for d in project.dir.glob("J*")) == sorted(j.job_dir for j in jobs)  # no stray directory


def test_doctor_finds_directories_and_jobs_out_of_step(api, project):
    job = project.create_job("test_sleep", params={"seconds": 0.1})
    (project.dir / "J77").mkdir()
    with api.store.write() as tx:
        j = tx.get_job(project.uid, job.uid)
        j.status = JobStatus.COMPLETED
        tx.put_job(j)
    subprocess.run(["rm", "-rf", str(project.dir / job.model.job_dir)], check=True)
    out = json.loads(cli(api.instance.home, "--json", "doctor").stdout)
    assert any("J77" in p for p in out["problems"])
    assert any(f"{job.uid} is completed but its directory" in p for p in out["problems"])
    assert f"clear {project.uid} {job.uid} (it has no results left)" in out["would_repair"]
    assert any("database integrity: ok" in x for x in out["ok"])


@pytest.fixture
def small_disk(tmp_path):
    """A place where big writes fail: a 2 MB tmpfs (a real ENOSPC) where this machine lets
    us mount one; else a 2 MB file-size limit, inherited by the worker (EFBIG)."""
    import contextlib
    import resource

    where = tmp_path / "small"
    where.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                                 capture_output=True).returncode == 0
    except OSError:
        mounted = False
    if mounted:
        yield where, contextlib.nullcontext()
        subprocess.run(["umount", "-l", str(where)], check=False)
        return

    @contextlib.contextmanager
    def limited():
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**20, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    yield where, limited()


def test_a_full_project_disk_fails_the_job_naming_the_file_and_leaves_no_temp_files(api, master, small_disk):
    where, limit = small_disk
    project = api.create_project("small", project_dir=where / "P")
    job = project.create_job("simulate_particles", params={"n_particles": 200, "box": 64, "snr": 0})
    with limit:  # the worker starts inside it (and inherits it, where no tmpfs could be mounted)
        job.queue()
        assert job.wait(120) == JobStatus.FAILED
    message = job.model.errors_run[-1].message
    assert "cannot be written (" in message and str(job.dir) in message, message
    assert any(why in message for why in ("No space left on device", "File too large")), message
    leftovers = [p.name for p in job.dir.rglob(".*tmp*")]
    assert leftovers == [], leftovers
