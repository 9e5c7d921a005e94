"""The master wakes when there is something to do: a job queued from another process
starts, and its end is read, long before the next poll would come."""

from __future__ import annotations

import os
import stat
import threading
import time

from conftest import ThreadMaster, cli

from cryohpc.api import Api
from cryohpc.status import JobStatus
from cryohpc.wakeup import Wakeup, wake_master

SLOW_POLL = dict(poll_interval_s=120.0, heartbeat_interval_s=0.2, heartbeat_timeout_s=300.0)


def test_queue_from_the_cli_and_the_job_end_wake_the_master(tmp_path):
    home = tmp_path / "home"
    api = Api.init(home, tmp_path / "projects", **SLOW_POLL)
    project = api.create_project("wake")
    job = project.create_job("test_sleep", params={"seconds": 0.5})
    master = ThreadMaster(api).start()
    try:
        time.sleep(0.5)  # its first pass is done; the next poll is two minutes away
        cli(home, "job", "queue", project.uid, job.uid, check=True)  # another process
        # launched on the queue, its end read on the worker's poke: both long before the poll
        assert job.wait(60, poll_s=0.1) == JobStatus.COMPLETED, job.model.errors_run
    finally:
        master.stop()


def test_a_poke_with_no_master_neither_blocks_nor_fails(tmp_path):
    wake_master(tmp_path / "absent")  # no FIFO
    path = tmp_path / "master.wake"
    path.write_text("left by something else")
    w = Wakeup(path)  # a stale file becomes the FIFO
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    w.close()
    wake_master(path)  # a FIFO with no reader: ENXIO, dropped at once


def test_wait_returns_when_poked_or_stopped(tmp_path):
    w = Wakeup(tmp_path / "master.wake")
    try:
        assert w.wait(0.05) is False
        threading.Timer(0.2, wake_master, args=(tmp_path / "master.wake",)).start()
        assert w.wait(60) is True
        for _ in range(10000):  # a flood of pokes fills the FIFO without blocking anyone
            wake_master(tmp_path / "master.wake")
        assert w.wait(1) is True
        assert w.wait(0.05) is False  # one wake drained them all
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        t0 = time.monotonic()
        assert w.wait(60, stop) is False and time.monotonic() - t0 < 30
    finally:
        w.close()


def test_a_home_where_no_fifo_can_be_made_leaves_the_master_polling(tmp_path):
    blocker = tmp_path / "master.wake"
    blocker.mkdir()  # a directory in the way: unlink fails, no FIFO
    w = Wakeup(blocker)
    try:
        assert w.wait(0.05) is False  # sleeps its time instead of failing
        w.poke()
    finally:
        w.close()
