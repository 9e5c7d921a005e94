"""The master's redesign, each fault pinned: no write lock across a lane's launch, a job
killed while it launches, clear leaving no trace of a run, exceptions escaping a pass
surfaced, old documents read through the run record."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time

import pytest
from conftest import ThreadMaster, cli, wait_for

from cryohpc.errors import UserError
from cryohpc.lanes.local import LocalLane
from cryohpc.lanes.siteconfig import NodeLaneConfig
from cryohpc.master import PassErrors, run_master
from cryohpc.model import Job, Run
from cryohpc.procs import is_alive
from cryohpc.scheduler import Scheduler
from cryohpc.status import JobStatus
from cryohpc.store import MIGRATIONS, Store

NODE = NodeLaneConfig(name="local", cpus=2, ram_gb=4, gpus=[])
HANGING_LANE = """lanes:
  - name: hangs
    type: cluster
    kind: slurm
    script_template: slurm.sh.j2
    command_timeout_s: 60
    submit_cmd: "sleep 20; echo 'sbatch: error: Batch job submission failed' >&2; exit 1"
"""


def test_a_hanging_submit_does_not_hold_the_database(api, project):
    """While the master waits 20 s on a submit command, 'cryohpc job create' (a write)
    returns at once: no transaction is open across the lane's launch."""
    (api.instance.paths.site_configs / "hangs.yaml").write_text(HANGING_LANE)
    job = project.create_job("test_sleep", params={"seconds": 1})
    job.queue(lane="hangs")
    master = ThreadMaster(api).start()
    try:
        wait_for(lambda: job.model.run.reason == "launching", 30, "the launch to begin")
        t0 = time.monotonic()
        out = cli(api.instance.home, "job", "create", project.uid, "test_sleep", check=True, timeout=60)
        took = time.monotonic() - t0
        assert took < 5.0, f"job create waited {took:.1f} s behind the submit"  # ~1 s of Python start-up
        assert "J2" in out.stdout
        assert job.status == JobStatus.QUEUED  # the submit is still running
        assert job.wait(60) == JobStatus.FAILED
        assert "Batch job submission failed" in job.model.errors_run[-1].message
    finally:
        master.stop()


class GatedLocalLane(LocalLane):
    """Fault injection: the launch waits for the test to let it go."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.entered, self.release = threading.Event(), threading.Event()

    def launch(self, request):
        self.entered.set()
        assert self.release.wait(30)
        return super().launch(request)


def test_a_job_killed_while_it_launches_is_stopped_once_started(api, project):
    lane = GatedLocalLane(NODE)
    sched = Scheduler(api.instance, lanes={"local": lane})
    job = project.create_job("test_sleep", params={"seconds": 60})
    job.queue()
    step = threading.Thread(target=sched.step)
    step.start()
    assert lane.entered.wait(30)
    t0 = time.monotonic()
    job.kill()  # a write while the launch runs: not blocked
    assert time.monotonic() - t0 < 2.0
    lane.release.set()
    step.join(30)
    m = job.model
    assert m.status == JobStatus.KILLED and m.run.pid is not None
    wait_for(lambda: not is_alive(m.run.pid, m.run.pid_start), 15, "the started worker to be stopped")


def test_after_clear_no_trace_of_the_run_is_left(api, project, master):
    job = project.create_job("test_exit", params={"code": 4})
    job.queue()
    assert job.wait(60) == JobStatus.FAILED
    before = job.model
    assert before.run.exit_code == 4 and before.run.pid and before.errors_run
    job.clear()
    shown = json.loads(cli(api.instance.home, "--json", "job", "show", project.uid, job.uid, check=True).stdout)
    assert shown["run"] == Run().model_dump(mode="json")
    assert shown["errors_run"] == [] and shown["queued_lane"] is None and shown["queue_status"] is None
    text = cli(api.instance.home, "job", "show", project.uid, job.uid, check=True).stdout
    assert "lane" not in text and "error" not in text and str(before.run.pid) not in text
    assert list(job.dir.iterdir()) == []


def test_an_exception_escaping_a_pass_is_logged_once_backed_off_and_surfaced(api, monkeypatch, caplog):
    calls = []

    def broken(self):
        calls.append(time.monotonic())
        raise ZeroDivisionError("a bug in a pass")

    monkeypatch.setattr(Scheduler, "step", broken)
    errors, stop = PassErrors(keep=True), threading.Event()
    thread = threading.Thread(target=run_master, args=(api.instance, stop, False, errors))
    with caplog.at_level(logging.ERROR, logger="cryohpc.master"):
        thread.start()
        time.sleep(2.0)
        stop.set()
        thread.join(10)
    poll = api.instance.config.poll_interval_s
    assert len(calls) >= 2 and errors.in_a_row == len(calls)
    assert len(calls) < 2.0 / poll  # backed off: fewer passes than the poll period allows
    assert calls[-1] - calls[-2] >= 2 * poll - 0.05
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "a bug in a pass" in tracebacks[0].getMessage()
    try:
        errors.raise_first()
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("the pass's exception was not surfaced")


def test_documents_from_before_the_run_record_are_migrated(tmp_path):
    """A schema-2 database with run fields at the top level of a job document opens with
    them in the run record, and the new columns filled from the documents."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    old = {"uid": "J1", "project_uid": "P1", "type": "test_sleep", "job_dir": "J1", "status": "killed",
           "status_times": {"killed": 1234.5}, "run_pid": 77, "run_pid_start": 9, "kill_pending": True,
           "cluster_job_id": "42", "cluster_job_status_reason": "unreachable worker", "exit_code": 3,
           "resources_allocated": {"cpus": 2, "target": "gpu01"}}
    conn.execute("INSERT INTO projects (uid, doc) VALUES ('P1', ?)",
                 (json.dumps({"uid": "P1", "title": "p", "project_dir": str(tmp_path)}),))
    conn.execute("INSERT INTO jobs (project_uid, uid, status, doc) VALUES ('P1', 'J1', 'killed', ?)", (json.dumps(old),))
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    store = Store(path)
    with store.read() as tx:
        job = tx.get_job("P1", "J1")
        pending = tx.jobs_with_pending_kill()
    assert isinstance(job, Job) and job.run.pid == 77 and job.run.pid_start == 9 and job.run.cluster_job_id == "42"
    assert job.run.reason == "unreachable worker" and job.run.exit_code == 3 and job.run.resources.target == "gpu01"
    assert [j.uid for j in pending] == ["J1"]
    with store.read() as tx:
        assert tx.jobs_entered_since(JobStatus.KILLED, 1000.0)[0].uid == "J1"
        assert tx.jobs_entered_since(JobStatus.KILLED, 2000.0) == []


class DiesAfterLaunch(LocalLane):
    """Fault injection: the worker starts, then the master 'dies' before recording it."""

    def launch(self, request):
        launched = super().launch(request)
        self.started = launched
        raise SystemExit("master killed between launch and record")


def died_mid_launch(api, project, seconds: float):
    """A queued test_sleep job whose master started its worker and died before recording it."""
    dying = DiesAfterLaunch(NODE)
    job = project.create_job("test_sleep", params={"seconds": seconds})
    job.queue()
    with pytest.raises(SystemExit):
        Scheduler(api.instance, lanes={"local": dying}).step()
    m = job.model
    assert m.status == JobStatus.QUEUED and m.run.launch_uncertain and m.run.pid is None
    assert is_alive(dying.started.pid, dying.started.pid_start)
    return job, dying.started


def test_a_master_that_died_mid_launch_is_followed_by_one_that_adopts_the_run(api, project):
    job, started = died_mid_launch(api, project, 2)
    sched = Scheduler(api.instance, lanes={"local": LocalLane(NODE)})
    sched.step()
    m = job.model
    assert m.status == JobStatus.LAUNCHED and not m.run.launch_uncertain
    assert (m.run.pid, m.run.pid_start) == (started.pid, started.pid_start)  # adopted, not started again
    assert "found running" in m.run.reason
    deadline = time.monotonic() + 60
    while not job.status.final and time.monotonic() < deadline:
        sched.step()
        time.sleep(0.1)
    assert job.status == JobStatus.COMPLETED


@pytest.mark.parametrize("action", ["resume", "restart"])
def test_resume_or_restart_to_another_lane_gets_the_checks_queue_makes(api, project, master, action):
    (api.instance.paths.site_configs / "lanes.yaml").write_text(
        "lanes:\n  - name: billed\n    type: cluster\n    kind: slurm\n    script_template: slurm.sh.j2\n"
        "    custom_vars:\n      - {name: account, type: str, required: true, help: account to charge}\n")
    job = project.create_job("test_exit", params={"code": 2})
    job.queue()
    assert job.wait(60) == JobStatus.FAILED
    for lane, message in (("nowhere", "no lane 'nowhere'"), ("billed", "custom variable 'account' is required")):
        try:
            getattr(job, action)(lane=lane)
        except UserError as err:
            assert message in str(err)
        else:
            raise AssertionError(f"{action} to {lane} was not checked")
        assert job.status == JobStatus.FAILED


def test_a_job_killed_after_its_master_died_mid_launch_has_its_run_found_and_stopped(api, project):
    job, started = died_mid_launch(api, project, 60)
    job.kill()  # nothing known to stop yet: the kill waits for the next master
    m = job.model
    assert m.status == JobStatus.KILLED and m.run.kill_pending
    Scheduler(api.instance, lanes={"local": LocalLane(NODE)}).step()
    wait_for(lambda: not is_alive(started.pid, started.pid_start), 15, "the orphaned worker to stop")
    assert not job.model.run.kill_pending
