"""Warm workers of the local lane (lanes/warm.py, worker/standby.py): a job whose launch
matches a waiting standby runs in it, with the same results, log, failure and kill
behaviour as a cold launch; anything else starts cold; the master leaves none behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ThreadMaster, wait_for
from hypothesis import given
from hypothesis import strategies as st

from cryohpc.api import Api
from cryohpc.compute.io_mrc import read_volume
from cryohpc.errors import ConfigError
from cryohpc.events import STANDBY_READY, STANDBY_TAKEN
from cryohpc.lanes import load_lane_configs, warm
from cryohpc.lanes.local import LocalLane
from cryohpc.lanes.siteconfig import MAX_WARM_RANKS, WARM_RANKS_VAR, default_local_lane
from cryohpc.procs import descendants, process_start_ticks
from cryohpc.status import JobStatus

WARM_LANE = "lanes:\n  - name: warm\n    warm_ranks: [{ranks}]\n"


def standbys() -> dict[int, int]:
    """This test process's waiting workers: pid -> their rank count."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"--standby" in args:
            out[int(entry.name)] = int(args[args.index(b"--standby") + 1])
    return out


def waiting_for(ranks: int, other_than: int | None = None) -> int:
    """A standby of ``ranks`` (other than one that ran a job and may still be exiting)."""
    def found() -> int | None:
        return next((pid for pid, r in standbys().items() if r == ranks and pid != other_than), None)

    wait_for(lambda: found() is not None, 60, f"a warm worker of {ranks} rank(s)")
    return found()


def gone(pid: int, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_start_ticks(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_start_ticks(pid)


@contextlib.contextmanager
def running(api: Api, name: str):
    """A master in a thread and a new project, stopped on leaving."""
    project = api.create_project(name)
    master = ThreadMaster(api).start()
    try:
        yield project
    finally:
        master.stop()


@pytest.fixture
def warm_api(tmp_path):
    api = Api.init(tmp_path / "home", tmp_path / "projects", poll_interval_s=0.1, heartbeat_interval_s=0.2)
    (api.instance.paths.site_configs / "warm.yaml").write_text(WARM_LANE.format(ranks="1, 2"))
    return api


def test_a_job_runs_in_the_waiting_worker_with_the_same_map_and_log_as_a_cold_one(warm_api):
    with running(warm_api, "warm") as project:
        sim = project.create_job("simulate_particles", params={"n_particles": 300, "box": 16, "psize_A": 2.0,
                                                               "snr": 2.0, "seed": 3})
        sim.queue()
        assert sim.wait(120) == JobStatus.COMPLETED
        maps = {}
        for lane in ("local", "warm"):  # the built-in lane has none here (conftest): cold
            ready = waiting_for(2)
            job = project.create_job("homo_reconstruct", params={"compute_num_ranks": 2})
            job.connect("particles", sim.uid, "particles")
            job.queue(lane=lane)
            assert job.wait(120) == JobStatus.COMPLETED, job.model.errors_run
            assert (job.model.run.pid == ready) == (lane == "warm")
            maps[lane] = read_volume(project.dir / job.load_output("volume").strings("map/path")[0])[0]
            log = (job.dir / "job.log").read_text()
            for rank in (0, 1):  # each rank's line whole, though both ranks write one file
                assert any(line.startswith(f"[rank {rank}] rank {rank} of 2") for line in log.splitlines())
            assert "Seconds on rank 0" in log
        np.testing.assert_allclose(maps["warm"], maps["local"], atol=1e-6 * np.abs(maps["local"]).max())
        assert gone(ready)
        waiting_for(2, other_than=ready)  # used once, then replaced


def test_jobs_no_standby_matches_start_cold(warm_api):
    (warm_api.instance.paths.site_configs / "warm.yaml").write_text(WARM_LANE.format(ranks="2"))
    with running(warm_api, "cold") as project:
        ready = waiting_for(2)
        job = project.create_job("test_sleep", params={"seconds": 0.1})  # one rank
        job.queue(lane="warm")
        assert job.wait(60) == JobStatus.COMPLETED
        assert job.model.run.pid != ready and ready in standbys()


def test_a_failing_job_in_a_warm_worker_fails_as_a_cold_one_and_leaves_no_rank(warm_api):
    with running(warm_api, "fails") as project:
        ready = waiting_for(2)
        job = project.create_job("test_mpi_rank_fails")
        job.queue(lane="warm")
        assert job.wait(60) == JobStatus.FAILED
        assert job.model.run.pid == ready
        assert "MPI rank 1 of 2" in job.model.errors_run[-1].message
        pids = [int(p.read_text()) for p in job.dir.glob("pid.rank*")]
        assert len(pids) == 2 and all(gone(p) for p in pids)
        assert "rank 1 gives up" in (job.dir / "job.log").read_text()


def test_what_the_mpi_launcher_says_of_a_killed_rank_reaches_the_jobs_log(warm_api):
    with running(warm_api, "signal") as project:
        ready = waiting_for(2)
        job = project.create_job("test_sleep", params={"seconds": 120, "ranks": 2})
        job.queue(lane="warm")
        wait_for(lambda: job.status == JobStatus.RUNNING, 60, "the job running")
        ranks = [pid for pid in descendants(ready) if b"--standby" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(ranks) == 2
        os.kill(ranks[1], signal.SIGKILL)
        assert job.wait(60) == JobStatus.FAILED
        assert gone(ready)
        # hydra prints this itself, to its own output: a cold launch has it in job.log too
        wait_for(lambda: "BAD TERMINATION" in (job.dir / "job.log").read_text(), 20, "the launcher's output")
        log = (job.dir / "job.log").read_text()
        assert STANDBY_READY.decode() not in log and STANDBY_TAKEN.decode() not in log  # the standby's words are the lane's


def test_killing_a_job_in_a_warm_worker_stops_it(warm_api):
    with running(warm_api, "kill") as project:
        ready = waiting_for(1)
        job = project.create_job("test_sleep", params={"seconds": 120})
        job.queue(lane="warm")
        wait_for(lambda: job.status == JobStatus.RUNNING, 60, "the job running")
        assert job.model.run.pid == ready
        job.kill()
        assert job.status == JobStatus.KILLED
        assert gone(ready)


def test_a_standby_that_dies_is_replaced_and_a_job_meanwhile_starts_cold(warm_api, monkeypatch):
    monkeypatch.setattr(warm, "RETRY_AFTER_S", 0.5)
    with running(warm_api, "dies") as project:
        ready = waiting_for(1)
        os.killpg(ready, signal.SIGKILL)
        assert gone(ready)  # dead before the job comes (the race with a dying one is the next test's)
        job = project.create_job("test_sleep", params={"seconds": 0.1})
        job.queue(lane="warm")
        assert job.wait(60) == JobStatus.COMPLETED
        assert job.model.run.pid != ready
        waiting_for(1, other_than=ready)


@pytest.mark.parametrize("after_reading", ["exit 3", "exec sleep 60"])
def test_a_standby_whose_pipe_takes_the_job_but_that_never_says_so_leaves_it_to_a_cold_start(
        warm_api, monkeypatch, tmp_path, after_reading):
    """As a ready standby killed while its job is handed to it: the line goes into its pipe,
    and then it exits (or hangs) without a word. The job must run all the same, cold."""
    said_ready = tmp_path / "ready"
    script = f"printf '{STANDBY_READY.decode()}'; : > '{said_ready}'.$1; read line; {after_reading}"
    monkeypatch.setattr(warm, "TAKE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(LocalLane, "_standby_command",
                        lambda self, ranks: ["sh", "-c", script, "standby", str(ranks), "--standby", str(ranks)])
    with running(warm_api, "mute") as project:
        ready = waiting_for(1)
        wait_for(lambda: Path(f"{said_ready}.1").exists(), 30, "the stand-in's word that it is ready")
        job = project.create_job("test_sleep", params={"seconds": 0.1})
        job.queue(lane="warm")
        assert job.wait(60) == JobStatus.COMPLETED, job.model.errors_run
        assert job.model.run.pid != ready
        assert gone(ready)



def test_a_standby_still_warming_up_is_handed_its_job_without_holding_the_master(tmp_path, monkeypatch):
    """Not ready yet, it is not waited for: the job waits in its pipe, the master goes on."""
    monkeypatch.setattr(warm, "TAKE_TIMEOUT_S", 60.0)
    env = dict(os.environ)
    workers = warm.WarmWorkers("w", [1], lambda ranks: ["sh", "-c", "exec sleep 120"], env)
    workers.tend(idle_cpus=1)
    standby = workers.take(["job"], env, lambda ranks: ["job"])
    assert standby is not None
    try:
        t0 = time.monotonic()
        assert workers.hand_over(standby, tmp_path)
        assert time.monotonic() - t0 < 20  # a wait for its word would have lasted 60 s
        assert standby.proc.poll() is None
    finally:
        os.killpg(standby.proc.pid, signal.SIGKILL)
        standby.proc.wait()
        standby.output.close()

def test_a_lane_whose_launcher_is_missing_keeps_its_other_warm_workers_and_the_master_serving(warm_api):
    (warm_api.instance.paths.site_configs / "warm.yaml").write_text(
        WARM_LANE.format(ranks="1, 2") + "    mpiexec: /nonexistent/mpiexec\n")
    with running(warm_api, "broken") as project:  # a pass that raised would fail the test on stop
        ready = waiting_for(1)
        job = project.create_job("test_sleep", params={"seconds": 0.1})
        job.queue(lane="warm")
        assert job.wait(60) == JobStatus.COMPLETED
        assert job.model.run.pid == ready
        assert 2 not in standbys().values()


def test_a_changed_site_config_stops_the_old_lanes_waiting_workers(warm_api):
    with running(warm_api, "reload"):
        old = waiting_for(1)
        (warm_api.instance.paths.site_configs / "warm.yaml").write_text(WARM_LANE.format(ranks="2"))
        waiting_for(2)
        assert gone(old)


def test_the_master_leaves_no_waiting_worker_behind(tmp_path, monkeypatch):
    monkeypatch.delenv(WARM_RANKS_VAR)  # the built-in lane's default: one and two ranks
    api = Api.init(tmp_path / "home", tmp_path / "projects", poll_interval_s=0.1)
    master = ThreadMaster(api).start()
    waiting = {waiting_for(1), waiting_for(2)}
    master.stop()
    assert all(gone(pid) for pid in waiting)
    assert not standbys()


def test_waiting_workers_end_by_themselves_when_the_master_dies(tmp_path):
    # a master process that starts its lane's warm workers and dies without stopping them
    script = tmp_path / "dying_master.py"
    script.write_text(
        "import os, sys, time\n"
        "from cryohpc.lanes.local import LocalLane\n"
        "from cryohpc.lanes.siteconfig import NodeLaneConfig\n"
        "lane = LocalLane(NodeLaneConfig(name='w', warm_ranks=[1, 2]))\n"
        "lane.tend()\n"
        "print(' '.join(str(s.proc.pid) for s in lane.warm._idle.values()), flush=True)\n"
        "os._exit(0)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True)
    pids = [int(x) for x in out.stdout.split()]
    assert len(pids) == 2
    assert all(gone(pid, 60) for pid in pids)  # the end of their input ends them


def test_warm_ranks_are_for_the_local_kind_and_positive(tmp_path):
    (tmp_path / "a.yaml").write_text("lanes:\n  - name: far\n    kind: ssh\n    warm_ranks: [2]\n")
    (tmp_path / "b.yaml").write_text("lanes:\n  - name: zero\n    warm_ranks: [0]\n")
    problems: list[str] = []
    lanes = load_lane_configs([tmp_path], problems)
    assert "far" not in lanes and "zero" not in lanes
    assert any("a.yaml" in p and "warm_ranks applies to kind local only" in p for p in problems)
    assert any("b.yaml" in p and "warm_ranks" in p for p in problems)


@given(st.lists(st.integers(1, MAX_WARM_RANKS), max_size=4))
def test_the_built_in_lanes_warm_ranks_come_from_the_variable(ranks):
    os.environ[WARM_RANKS_VAR] = ", ".join(map(str, ranks))
    try:
        assert default_local_lane().warm_ranks == ranks
    finally:
        os.environ[WARM_RANKS_VAR] = ""


@given(st.lists(st.integers(1, MAX_WARM_RANKS).map(str), max_size=3), st.integers(0, 3),
       st.one_of(st.integers(max_value=0).map(str), st.integers(min_value=MAX_WARM_RANKS + 1).map(str),
                 st.sampled_from(["x", "1.5", "2x", "-", "0x2", "two"])))
def test_a_bad_warm_ranks_variable_is_named_and_leaves_the_local_lane_cold(good, at, bad):
    os.environ[WARM_RANKS_VAR] = ",".join([*good[:at], bad, *good[at:]])
    try:
        with pytest.raises(ConfigError, match=WARM_RANKS_VAR):
            default_local_lane()
        problems: list[str] = []
        lanes = load_lane_configs([], problems)
        assert lanes["local"].warm_ranks == [] and WARM_RANKS_VAR in problems[0]
    finally:
        os.environ[WARM_RANKS_VAR] = ""
