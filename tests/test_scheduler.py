"""The master's scheduling on the local lane, with real worker processes."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import FAST, ThreadMaster, wait_for

from cryohpc.api import Api
from cryohpc.errors import BuildError, UserError
from cryohpc.master import run_master
from cryohpc.procs import process_start_ticks
from cryohpc.status import JobStatus, QueueStatus


def lane_file(api: Api, text: str) -> None:
    (api.instance.paths.site_configs / "lanes.yaml").write_text(text)


def test_priority_order_on_a_one_cpu_lane(api, project):
    lane_file(api, "lanes:\n  - name: one\n    cpus: 1\n    ram_gb: 4\n    gpus: []\n")
    jobs = [project.create_job("test_sleep", params={"seconds": 0.3}) for _ in range(3)]
    for job, prio in zip(jobs, [0, 5, 1], strict=True):
        job.queue(lane="one", priority=prio)
    m = ThreadMaster(api).start()
    try:
        for job in jobs:
            assert job.wait(60) == JobStatus.COMPLETED
    finally:
        m.stop()
    launched = {j.uid: j.model.status_times["launched"] for j in jobs}
    order = sorted(launched, key=launched.get)
    assert order == [jobs[1].uid, jobs[2].uid, jobs[0].uid]
    # one CPU: runs never overlap
    spans = sorted((j.model.status_times["launched"], j.model.status_times["completed"]) for j in jobs)
    assert all(a[1] <= b[0] + 0.2 for a, b in zip(spans, spans[1:], strict=False))


def test_gpus_are_allocated_and_can_be_chosen(api, project):
    lane_file(api, "lanes:\n  - name: gpus\n    cpus: 8\n    ram_gb: 8\n    gpus: [0, 1]\n")
    a, b, c = (project.create_job("test_sleep_gpu", params={"seconds": 1.5}) for _ in range(3))
    for j in (a, b, c):
        j.queue(lane="gpus")
    m = ThreadMaster(api).start()
    try:
        wait_for(lambda: a.status.active and b.status.active, what="two GPU jobs running")
        wait_for(lambda: c.model.queue_status == QueueStatus.WAITING_RESOURCES, what="third job waiting")
        assert sorted(a.model.run.resources.gpu_ids + b.model.run.resources.gpu_ids) == [0, 1]
        for j in (a, b, c):
            assert j.wait(60) == JobStatus.COMPLETED
        assert sorted((a.dir / "gpus.txt").read_text() + (b.dir / "gpus.txt").read_text()) == ["0", "1"]
        d = project.create_job("test_sleep_gpu", params={"seconds": 0.1})
        d.queue(lane="gpus", gpus=[1])
        assert d.wait(60) == JobStatus.COMPLETED
        assert (d.dir / "gpus.txt").read_text() == "1"
    finally:
        m.stop()


def test_impossible_resources_are_a_build_error(api, project):
    lane_file(api, "lanes:\n  - name: cpu\n    gpus: []\n")
    job = project.create_job("test_sleep_gpu")
    with pytest.raises(BuildError, match="needs 1 GPU\\(s\\); no machine of lane 'cpu' has that many \\(cpu: 0"):
        job.queue(lane="cpu")
    with pytest.raises(UserError, match="no lane 'nope'"):
        job.queue(lane="nope")
    lane_file(api, "lanes:\n  - name: cpu\n    gpus: [0]\n")
    with pytest.raises(BuildError, match="GPU\\(s\\) \\[3\\] are not in lane 'cpu'"):
        job.queue(lane="cpu", gpus=[3])
    assert job.status == JobStatus.BUILDING


def test_child_waits_for_parent_then_runs(api, project, sample, master):
    parent = project.create_job("import_particles", params={"particle_meta_path": str(sample.star)})
    child = project.create_job("subset_particles", params={"max_items": 3})
    child.connect("particles", parent.uid, "imported_particles")
    master.stop()
    child.queue()
    parent.queue(priority=-1)  # lower priority, but the child cannot go first
    master.start()
    assert child.wait(60) == JobStatus.COMPLETED
    assert child.model.status_times["launched"] > parent.model.status_times["completed"]


def test_child_of_failed_parent_says_so(project, tmp_path, master):
    parent = project.create_job("import_particles", params={"particle_meta_path": str(tmp_path / "none.star")})
    child = project.create_job("subset_particles")
    child.connect("particles", parent.uid, "imported_particles")
    parent.queue()
    child.queue()
    assert parent.wait(60) == JobStatus.FAILED
    wait_for(lambda: child.model.queue_status == QueueStatus.WAITING_PARENT_FAILED, what="queue status")
    assert child.status == JobStatus.QUEUED


def test_kill_stops_the_worker_and_its_processes(project, master):
    job = project.create_job("test_sleep", params={"seconds": 60})
    job.queue()
    wait_for(lambda: job.status == JobStatus.RUNNING, what="running")
    pid = job.model.run.pid
    assert process_start_ticks(pid) is not None
    job.kill()
    assert job.status == JobStatus.KILLED
    assert process_start_ticks(pid) is None
    with pytest.raises(UserError, match="only queued or running jobs can be killed"):
        job.kill()
    time.sleep(0.5)  # the master sees the worker's late 'failed' event and must ignore it
    assert job.status == JobStatus.KILLED


def test_worker_that_dies_without_reporting_fails_the_job(project, master):
    job = project.create_job("test_exit", params={"code": 3})
    job.queue()
    assert job.wait(60) == JobStatus.FAILED
    assert "exit code 3" in job.model.errors_run[-1].message
    assert job.model.run.exit_code == 3


def test_silent_worker_is_failed_after_heartbeat_timeout(tmp_path):
    api = Api.init(tmp_path / "home", tmp_path / "projects", **{**FAST, "heartbeat_timeout_s": 1.5})
    project = api.create_project("hb")
    job = project.create_job("test_sleep", params={"seconds": 60})
    job.queue()
    m = ThreadMaster(api).start()
    try:
        wait_for(lambda: job.status == JobStatus.RUNNING, what="running")
        pid = job.model.run.pid
        os.killpg(pid, signal.SIGSTOP)  # frozen: alive, but silent
        assert job.wait(30) == JobStatus.FAILED
        assert "no heartbeat" in job.model.errors_run[-1].message
        wait_for(lambda: process_start_ticks(pid) is None, 15, "the frozen worker to be killed")
    finally:
        m.stop()


def test_master_restart_mid_run_loses_no_job(api, project):
    job = project.create_job("test_sleep", params={"seconds": 2.0})
    job.queue()
    first = ThreadMaster(api).start()
    wait_for(lambda: job.status == JobStatus.RUNNING, what="running")
    first.stop()
    time.sleep(2.5)  # the job finishes while no master runs
    assert job.status == JobStatus.RUNNING
    second = ThreadMaster(api).start()  # a fresh lane object: the worker is not its child
    try:
        assert job.wait(30) == JobStatus.COMPLETED
    finally:
        second.stop()


def test_only_one_master_per_instance(api, master):
    wait_for(lambda: api.instance.paths.master_pid.exists(), what="master pid file")
    with pytest.raises(UserError, match="a master is already running"):
        run_master(api.instance, install_signals=False)


def test_clear_returns_job_to_building_and_empties_its_directory(project, sample, master):
    job = project.create_job("import_particles", params={"particle_meta_path": str(sample.star)})
    job.queue()
    assert job.wait(60) == JobStatus.COMPLETED
    assert any(job.dir.iterdir())
    job.clear()
    m = job.model
    assert m.status == JobStatus.BUILDING and not any(r.metafiles for g in m.outputs for r in g.results)
    assert list(job.dir.iterdir()) == []
    job.queue()
    assert job.wait(60) == JobStatus.COMPLETED


def test_a_queued_job_of_unknown_type_fails_alone(api, project):
    """A plugin removed while its job was queued: that job fails with the reason, and a
    lower-priority job behind it still runs (one job's trouble is that job's alone)."""
    orphan = project.create_job("test_sleep", params={"seconds": 0.1})
    orphan.queue(priority=5)
    with api.instance.store.write() as tx:
        job = tx.get_job(project.uid, orphan.uid)
        job.type = "removed_plugin_job"
        tx.put_job(job)
    fine = project.create_job("test_sleep", params={"seconds": 0.1})
    fine.queue(priority=0)
    m = ThreadMaster(api).start()
    try:
        assert fine.wait(60) == JobStatus.COMPLETED
        assert orphan.wait(30) == JobStatus.FAILED
        assert "unknown job type 'removed_plugin_job'" in orphan.model.errors_run[-1].message
    finally:
        m.stop()


def test_a_site_config_rewritten_within_one_mtime_tick_is_read_again(api):
    """A pass that reads a site config while it is being written (truncated, then filled
    within one coarse mtime tick) must not keep the half-read version: files changed in
    the last second are read again."""
    import os

    from cryohpc.scheduler.lane_set import LaneSet

    path = api.instance.paths.site_configs / "tick.yaml"
    lane = "lanes:\n  - name: {}\n    type: node\n    kind: local\n"
    path.write_text(lane.format("aaaa"))
    before = path.stat()
    lanes = LaneSet(api.instance)
    assert "aaaa" in lanes()
    path.write_text(lane.format("bbbb"))  # same size; the same mtime, as within one tick
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    lanes.reload()
    assert "bbbb" in lanes() and "aaaa" not in lanes()


def test_a_site_config_removed_between_listing_and_reading_costs_the_pass_nothing(api, monkeypatch):
    """An admin removes a lane's file while a pass lists the folder (seen in CI as a failed
    pass): the pass goes on with the files that are there, and the next one sees the removal."""
    from pathlib import Path

    from cryohpc.scheduler.lane_set import LaneSet

    folder = api.instance.paths.site_configs
    (folder / "gone.yaml").write_text("lanes:\n  - name: gone\n    type: node\n    kind: local\n")
    lanes = LaneSet(api.instance)
    assert "gone" in lanes()
    listing = Path.glob

    def stale_glob(self, pattern):  # the listing still names the file, removed just after
        names = list(listing(self, pattern))
        if self == folder:
            (folder / "gone.yaml").unlink(missing_ok=True)
        return iter(names)

    monkeypatch.setattr(Path, "glob", stale_glob)
    lanes.reload()  # raised FileNotFoundError before
    monkeypatch.undo()
    lanes.reload(force=True)
    assert "gone" not in lanes() and "local" in lanes()


def test_a_job_queued_for_a_lane_the_pass_has_not_read_yet_is_not_failed(api, project):
    """The pass read the site configs, then a job was queued (its lane checked against the
    files as they are now) for a lane added meanwhile: the pass reads them again instead
    of failing the job for a lane 'not configured'."""
    from cryohpc.scheduler import Scheduler

    sched = Scheduler(api.instance)
    (api.instance.paths.site_configs / "late.yaml").write_text("lanes:\n  - name: late\n    type: node\n    kind: local\n")
    files = sorted(api.instance.paths.site_configs.glob("*.y*ml"))
    sched.lane_set._stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)  # as if read
    job = project.create_job("test_sleep", params={"seconds": 0.2})
    job.queue(lane="late")
    sched.step()
    assert job.status != JobStatus.FAILED, job.model.errors_run
    deadline = time.monotonic() + 60
    while job.status.active and time.monotonic() < deadline:
        time.sleep(0.1)
        sched.step()
    assert job.status == JobStatus.COMPLETED, job.model.errors_run


def test_site_config_problems_are_each_threads_own(api):
    """A master in a thread beside the API reloads lanes at any time; the problems a queue
    check reports are those of its own load, not reset by the other thread's."""
    import threading

    (api.instance.paths.site_configs / "bad.yaml").write_text("lanes:\n  - name: bad\n    type: nonsense\n")
    api.instance.build_lanes()
    mine = list(api.instance.lane_problems)
    assert mine and "bad.yaml" in mine[0]

    seen = []

    def other_thread():
        (api.instance.paths.site_configs / "bad.yaml").rename(api.instance.paths.site_configs / "bad.off")
        api.instance.build_lanes()
        seen.append(list(api.instance.lane_problems))

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert seen == [[]]  # the other thread's load found nothing wrong
    assert api.instance.lane_problems == mine  # and did not touch this thread's report
