"""The SQLite store: uids, migrations, and concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from cryohpc.errors import NotFoundError, StoreError
from cryohpc.store import SCHEMA_VERSION, Store


def test_schema_version_is_recorded(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    assert store.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "db.sqlite"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this cryohpc"):
        Store(path)


def test_uids_count_up_per_project_and_are_never_reused(api):
    p1, p2 = api.create_project("a"), api.create_project("b")
    assert (p1.uid, p2.uid) == ("P1", "P2")
    j1 = p1.create_job("import_volume")
    j2 = p1.create_job("import_volume")
    assert (j1.uid, j2.uid) == ("J1", "J2")
    assert p2.create_job("import_volume").uid == "J1"
    with api.store.write() as tx:  # delete J2
        job = tx.get_job("P1", "J2")
        job.deleted = True
        tx.put_job(job)
    with pytest.raises(NotFoundError, match="no job J2 in project P1"):
        p1.find_job("J2")
    assert p1.create_job("import_volume").uid == "J3"


def test_failed_transaction_rolls_back(api):
    p = api.create_project("a")
    with pytest.raises(RuntimeError, match="boom"), api.store.write() as tx:
        tx.next_number("P1/job")
        tx.put_project(p.model.model_copy(update={"title": "changed"}))
        raise RuntimeError("boom")
    assert p.model.title == "a"
    assert p.create_job("import_volume").uid == "J1"


def _hammer(db_path: str, n: int, out) -> None:
    store = Store(db_path)
    got = []
    for _ in range(n):
        with store.write() as tx:
            got.append(tx.next_number("shared"))
            value = tx.next_number("rmw")  # read-modify-write pattern under the write lock
            tx._c.execute("INSERT OR REPLACE INTO counters (name, value) VALUES ('copy', ?)", (value,))
    out.put(got)


def test_concurrent_processes_lose_no_update(tmp_path):
    path = str(tmp_path / "db.sqlite")
    Store(path).close()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(path, 100, q)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    numbers = sorted(x for r in results for x in r)
    assert numbers == list(range(1, 401))  # every number handed out exactly once
    store = Store(path)
    with store.read() as tx:
        assert tx._c.execute("SELECT value FROM counters WHERE name='rmw'").fetchone()[0] == 400
