"""SSH worker targets of node lanes, against a real sshd on 127.0.0.1 (scripts/dev-sshd.sh).

The worker runs on the same machine through SSH, so the job directory is "shared" for
real, and process checks by PID see what the remote side left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import PLUGINS, Sshd, ThreadMaster, cli, db_snapshot, free_port, wait_for

from cryohpc.api import Api
from cryohpc.errors import BuildError
from cryohpc.lanes.siteconfig import SshHost
from cryohpc.lanes.ssh import HostKeyError, HostUnreachable, RemoteTimeout
from cryohpc.procs import process_start_ticks
from cryohpc.status import JobStatus, QueueStatus

WORKER_ENV = {"CRYOHPC_PLUGINS": "cryohpc_testjobs", "PYTHONPATH": str(PLUGINS)}


def ssh_lane(api: Api, sshd, *, targets: list[dict] | None = None, poll_interval_s: float = 0.3, **extra) -> None:
    """A site config with lane 'boxes' of SSH workers on the test sshd."""
    targets = targets or [{}]
    workers = [{"lane": "boxes", **sshd.host(), "cpus": 4, "ram_gb": 8, "env": WORKER_ENV, **extra, **t}
               for t in targets]
    text = yaml.safe_dump({"lanes": [{"name": "boxes", "kind": "ssh", "poll_interval_s": poll_interval_s}],
                           "workers": workers})
    (api.instance.paths.site_configs / "boxes.yaml").write_text(text)


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies excluded)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                out.append(int(entry.name))
    return out


def test_worker_connect_list_show_test_update_remove(api, sshd, tmp_path):
    home = api.instance.home
    base = ["--host", "127.0.0.1", "--port", str(sshd.port), "--identity-file", str(sshd.key),
            "--known-hosts", str(sshd.known_hosts)]
    before = db_snapshot(api)
    missing = cli(home, "worker", "connect", *base, "--lane", "boxes")
    assert missing.returncode == 2 and "add --new-lane" in missing.stderr
    bad_port = cli(home, "worker", "connect", "--host", "127.0.0.1", "--port", "0", "--lane", "boxes", "--new-lane")
    assert bad_port.returncode == 2 and "worker setting port: Input should be greater than or equal to 1" in bad_port.stderr
    assert not (api.instance.paths.site_configs / "workers.yaml").exists() and db_snapshot(api) == before
    ssd = tmp_path / "ssd"
    out = cli(home, "worker", "connect", *base, "--lane", "boxes", "--new-lane", "--ssd-path", str(ssd),
              "--ssd-quota", "500", check=True).stdout
    assert f"worker 127.0.0.1:{sshd.port}" in out and "connected to lane boxes" in out
    target = api.instance.lane_configs()["boxes"].workers[0]
    assert (target.cpus, target.cache_path, target.cache_quota_mb) == (os.cpu_count(), str(ssd), 500)
    assert target.ram_gb > 0.5  # probed over SSH, not a default
    again = cli(home, "worker", "connect", *base, "--lane", "boxes")
    assert again.returncode == 2 and "already connected" in again.stderr and "--update" in again.stderr
    listed = cli(home, "worker", "list", check=True).stdout
    assert f"127.0.0.1:{sshd.port}" in listed and str(ssd) in listed
    tested = cli(home, "worker", "test", f"127.0.0.1:{sshd.port}", check=True).stdout
    assert "host key verified" in tested and "writable" in tested
    cli(home, "worker", "connect", *base, "--lane", "boxes", "--update", "--no-ssd", "--cpus", "1", check=True)
    target = api.instance.lane_configs()["boxes"].workers[0]
    assert (target.cpus, target.cache_path, target.identity_file) == (1, None, str(sshd.key))
    assert "SSD cache: none" in cli(home, "worker", "show", f"127.0.0.1:{sshd.port}", check=True).stdout
    bad_ssd = cli(home, "worker", "connect", *base, "--lane", "boxes", "--update", "--ssd-path", "/proc/no")
    assert bad_ssd.returncode == 2 and "SSD cache folder is not usable" in bad_ssd.stderr
    assert api.instance.lane_configs()["boxes"].workers[0].cache_path is None  # the refused change left nothing
    cli(home, "worker", "remove", f"127.0.0.1:{sshd.port}", check=True)
    assert api.workers("boxes") == []
    # the Python facade does what the CLI does
    again = api.connect_worker("boxes", "127.0.0.1", port=sshd.port, identity_file=str(sshd.key),
                               known_hosts=str(sshd.known_hosts), gpus=[])
    assert [w.name for w in api.workers()] == [again.name] and again.cpus == os.cpu_count()
    api.remove_worker(again.name)
    assert api.workers() == []
    job = api.create_project("empty lane").create_job("test_sleep")
    with pytest.raises(BuildError, match="lane 'boxes' has no workers yet; add one with 'cryohpc worker connect'"):
        job.queue(lane="boxes")


def test_job_runs_on_ssh_worker_and_kill_leaves_no_process(api, sshd, fresh_sessions):
    ssh_lane(api, sshd)
    project = api.create_project("ssh")
    master = ThreadMaster(api).start()
    try:
        done = project.create_job("test_sleep", params={"seconds": 0.3})
        done.queue(lane="boxes")
        assert done.wait(60) == JobStatus.COMPLETED
        model = done.model
        assert model.run.resources.target == f"127.0.0.1:{sshd.port}"
        # written by the remote supervisor once the worker has exited, which may be just after the
        # master (woken by the worker's last event) marked the job completed
        wait_for(lambda: (done.dir / "exit_code").exists(), 30, "the supervisor's exit code")
        assert (done.dir / "exit_code").read_text().strip() == "0"
        long = project.create_job("test_sleep", params={"seconds": 120, "ranks": 2})  # under mpiexec there
        long.queue(lane="boxes")
        wait_for(lambda: long.model.status == JobStatus.RUNNING, 60, "the long job to run")
        ranks = [int(wait_for(lambda r=r: (long.dir / f"pid.rank{r}").exists() and (long.dir / f"pid.rank{r}").read_text(),
                              30, f"rank {r}")) for r in (0, 1)]
        pgid = long.model.run.pid
        members = group_members(pgid)
        assert len(members) >= 2 and all(process_start_ticks(r) for r in ranks)  # supervisor, mpiexec; ranks live
        assert process_start_ticks(pgid) == long.model.run.pid_start
        cli(api.instance.home, "job", "kill", project.uid, long.uid, check=True)
        assert long.model.status == JobStatus.KILLED
        assert group_members(pgid) == []
        assert all(process_start_ticks(p) is None for p in [*members, *ranks])
        assert fresh_sessions.stats["transports_opened"] == 1
    finally:
        master.stop()


def test_a_site_declared_program_runs_on_an_ssh_worker(api, sshd, fresh_sessions, sample_volume, tmp_path):
    from test_external_jobtypes import check_scaled, declare_scale_map, run_scale_map

    ssh_lane(api, sshd)
    declare_scale_map(api, tmp_path / "bin")
    project = api.create_project("declared over ssh")
    master = ThreadMaster(api).start()
    try:
        label = "x; touch /tmp/owned $(id)"
        imp, job, _ = run_scale_map(project, sample_volume, "boxes", label)
        check_scaled(project, imp, job, label)
        assert job.model.run.resources.target == f"127.0.0.1:{sshd.port}"
    finally:
        master.stop()


def test_restart_on_an_ssh_worker_stops_the_run_and_starts_a_new_one(api, sshd, fresh_sessions):
    ssh_lane(api, sshd)
    project = api.create_project("ssh restart")
    master = ThreadMaster(api).start()
    try:
        job = project.create_job("test_sleep", params={"seconds": 120})
        job.queue(lane="boxes")
        wait_for(lambda: job.model.status == JobStatus.RUNNING, 60, "the job to run")
        pgid = job.model.run.pid
        cli(api.instance.home, "job", "restart", project.uid, job.uid, check=True)
        assert group_members(pgid) == []
        wait_for(lambda: job.model.status == JobStatus.RUNNING and job.model.run.pid != pgid, 60, "the new run")
        assert job.model.queued_lane == "boxes" and group_members(job.model.run.pid)
        job.kill()
        assert group_members(job.model.run.pid) == []
    finally:
        master.stop()


def test_unreachable_target_is_not_failed_and_is_reconciled(tmp_path, sshd, fresh_sessions):
    """sshd goes away while three jobs run: one finishes meanwhile, one's worker dies,
    one keeps running. None is failed while the host is unreachable (the heartbeat limit
    passes meanwhile); once sshd is back each gets its true state."""
    api = Api.init(tmp_path / "home", tmp_path / "projects", poll_interval_s=0.1, heartbeat_interval_s=0.2,
                   heartbeat_timeout_s=2.0)
    ssh_lane(api, sshd, breaker_cooldown_s=1.0, retries=0, breaker_threshold=1)
    project = api.create_project("outage")
    master = ThreadMaster(api).start()
    finishes, dies, keeps = (project.create_job("test_sleep", params={"seconds": s}) for s in (4, 60, 12))
    try:
        for job in (finishes, dies, keeps):
            job.queue(lane="boxes")
        wait_for(lambda: all(j.model.status == JobStatus.RUNNING for j in (finishes, dies, keeps)), 60, "all running")
        sshd.stop()
        wait_for(lambda: dies.model.run.cluster_status == "unreachable", 30, "the lane to report unreachable")
        worker_pid = next(p for p in group_members(dies.model.run.pid) if p != dies.model.run.pid)
        os.kill(worker_pid, signal.SIGKILL)  # its supervisor records -9; nobody reports to the master
        with api.instance.store.read() as tx:
            state = tx.worker_states()[("boxes", f"127.0.0.1:{sshd.port}")]
        assert state[0] == "unreachable" and "cannot connect" in state[2]
        assert "(unreachable)" in cli(api.instance.home, "job", "list", project.uid, check=True).stdout
        assert finishes.wait(30) == JobStatus.COMPLETED  # its events still reach the shared job directory
        time.sleep(4)  # twice the heartbeat limit with no word from the dead worker
        assert dies.model.status == JobStatus.RUNNING and keeps.model.status == JobStatus.RUNNING
        sshd.start()
        assert dies.wait(30) == JobStatus.FAILED
        assert dies.model.run.exit_code == -9 and "exit code -9" in dies.model.errors_run[-1].message
        wait_for(lambda: keeps.model.run.cluster_status == "running", 30, "the survivor to be seen running")
        assert keeps.model.status == JobStatus.RUNNING
        assert keeps.wait(30) == JobStatus.COMPLETED
        with api.instance.store.read() as tx:
            assert tx.worker_states()[("boxes", f"127.0.0.1:{sshd.port}")][0] == "reachable"
    finally:
        master.stop()
        if not (sshd.folder / "sshd.pid").exists():
            sshd.start()


def test_wrong_or_unknown_host_key_is_refused_with_a_clear_message(api, sshd, tmp_path, fresh_sessions):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(Path(f'{other}.pub').read_text().split()[:2])}\n")
    with pytest.raises(HostKeyError, match="HOST KEY MISMATCH.*wrong_known_hosts"):
        fresh_sessions.run(SshHost(**sshd.host(known_hosts=str(wrong))), "true")
    unknown = tmp_path / "empty_known_hosts"
    with pytest.raises(HostKeyError, match=f"host key not known .*ssh-keyscan -p {sshd.port} 127.0.0.1 >> {unknown}"):
        fresh_sessions.run(SshHost(**sshd.host(known_hosts=str(unknown))), "true")
    assert fresh_sessions.stats["transports_opened"] == 0 and not unknown.exists()
    # the CLI says the same and records nothing
    home = api.instance.home
    base = ["--host", "127.0.0.1", "--port", str(sshd.port), "--identity-file", str(sshd.key), "--lane", "boxes",
            "--new-lane"]
    refused = cli(home, "worker", "connect", *base, "--known-hosts", str(wrong))
    assert refused.returncode == 2 and "HOST KEY MISMATCH" in refused.stderr
    assert not (api.instance.paths.site_configs / "workers.yaml").exists()
    # a job on a target whose key changed waits, unlaunched and not failed
    ssh_lane(api, sshd, known_hosts=str(wrong))
    job = api.create_project("keys").create_job("test_sleep", params={"seconds": 0.1})
    job.queue(lane="boxes")
    master = ThreadMaster(api).start()
    try:
        wait_for(lambda: "HOST KEY MISMATCH" in (job.model.run.reason or ""), 30, "the refusal")
        assert job.model.status == JobStatus.QUEUED
        assert job.model.queue_status == QueueStatus.WAITING_UNREACHABLE
    finally:
        master.stop()
    # explicit opt-in records the key on first contact
    (api.instance.paths.site_configs / "boxes.yaml").unlink()
    accepted = tmp_path / "accepted_known_hosts"
    cli(home, "worker", "connect", *base, "--known-hosts", str(accepted), "--accept-new-host-key", check=True)
    assert Path(f"{sshd.folder}/host_key.pub").read_text().split()[1] in accepted.read_text()


def test_fifty_jobs_on_one_worker_open_one_transport(api, sshd, fresh_sessions):
    ssh_lane(api, sshd)
    project = api.create_project("many")
    jobs = [project.create_job("test_sleep", params={"seconds": 0}) for _ in range(50)]
    for j in jobs:
        j.queue(lane="boxes")
    master = ThreadMaster(api).start()
    try:
        for j in jobs:
            assert j.wait(240) == JobStatus.COMPLETED
    finally:
        master.stop()
    assert fresh_sessions.stats["transports_opened"] == 1
    assert fresh_sessions.stats["commands"] >= 50  # every start went over that one connection
    assert {j.model.run.host for j in jobs} == {f"127.0.0.1:{sshd.port}"}


def test_placement_by_free_gpus_and_direct_queueing(api, sshd, fresh_sessions):
    """Two targets on the one sshd (two names): GPU jobs fill them by free GPUs; a job
    asking for more GPUs than any target has is a build error; a target and GPU ids can
    be named at queue time."""
    ssh_lane(api, sshd, targets=[{"name": "box1", "gpus": [0, 1]}, {"name": "box2", "gpus": [0]}])
    project = api.create_project("gpus")
    too_big = project.create_job("test_sleep", params={"gpus": 3})
    with pytest.raises(BuildError, match=r"needs 3 GPU\(s\); no machine of lane 'boxes' has that many "
                                         r"\(box1: 2 \[0, 1\], box2: 1 \[0\]\)"):
        too_big.queue(lane="boxes")
    with pytest.raises(BuildError, match="give the worker target too"):
        project.create_job("test_sleep_gpu").queue(lane="boxes", gpus=[1])
    with pytest.raises(BuildError, match="GPU\\(s\\) \\[1\\] are not in worker box2"):
        project.create_job("test_sleep_gpu").queue(lane="boxes", target="box2", gpus=[1])
    three = [project.create_job("test_sleep_gpu", params={"seconds": 3}) for _ in range(3)]
    fourth = project.create_job("test_sleep_gpu", params={"seconds": 0.1})
    direct = project.create_job("test_sleep_gpu", params={"seconds": 0.1})
    for j in three:
        j.queue(lane="boxes")
    fourth.queue(lane="boxes")
    direct.queue(lane="boxes", target="box1", gpus=[1])
    master = ThreadMaster(api).start()
    try:
        wait_for(lambda: all(j.model.status.active for j in three), 60, "three GPU jobs placed")
        placed = sorted((j.model.run.resources.target, j.model.run.resources.gpu_ids[0]) for j in three)
        assert placed == [("box1", 0), ("box1", 1), ("box2", 0)]
        wait_for(lambda: fourth.model.queue_status == QueueStatus.WAITING_RESOURCES, 30, "the fourth to wait")
        assert fourth.model.status == JobStatus.QUEUED
        for j in (*three, fourth, direct):
            assert j.wait(60) == JobStatus.COMPLETED
        assert (direct.model.run.resources.target, direct.model.run.resources.gpu_ids) == ("box1", [1])
        assert (direct.dir / "gpus.txt").read_text() == "1"
    finally:
        master.stop()
    assert fresh_sessions.stats["transports_opened"] == 1  # two targets, one host: one connection


def test_session_manager_breaker_backoff_and_timeouts(sshd, fresh_sessions):
    closed = SshHost(**sshd.host(port=sshd.port + 1 if sshd.port < 65535 else sshd.port - 1),
                     retries=2, breaker_threshold=3, breaker_cooldown_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(HostUnreachable, match="cannot connect"):
        fresh_sessions.run(closed, "true")
    assert fresh_sessions.stats["connect_attempts"] == 3  # retried with backoff, then the breaker opened
    assert time.monotonic() - t0 < 10
    with pytest.raises(HostUnreachable, match="unreachable since"):
        fresh_sessions.run(closed, "true")
    assert fresh_sessions.stats["connect_attempts"] == 3  # refused at once, no new attempt
    assert fresh_sessions.reachability(closed)[0] == "unreachable"
    time.sleep(0.6)
    with pytest.raises(HostUnreachable, match="cannot connect"):
        fresh_sessions.run(closed, "true")
    assert fresh_sessions.stats["connect_attempts"] == 4  # one probe after the cool-down
    ok = SshHost(**sshd.host(max_channels=2))
    with pytest.raises(RemoteTimeout, match="did not finish"):
        fresh_sessions.run(ok, "sleep 5", timeout_s=0.5)
    res = fresh_sessions.run(ok, "echo out; echo err >&2; exit 7")
    assert (res.exit_status, res.stdout, res.stderr) == (7, "out\n", "err\n")
    assert fresh_sessions.stats["transports_opened"] == 1  # the timeout did not cost the connection
    limited = SshHost(**sshd.host(user="root", max_connects_per_min=1))  # another key: its own connection
    fresh_sessions.run(limited, "true")
    fresh_sessions.close_all()  # as if the connection dropped
    with pytest.raises(HostUnreachable, match="limit 1"):
        fresh_sessions.run(limited, "true")


def test_channels_in_flight_are_bounded(sshd, fresh_sessions, tmp_path):
    """Six commands at once on a connection allowing two: never more than two run."""
    from concurrent.futures import ThreadPoolExecutor

    host = SshHost(**sshd.host(max_channels=2))
    trace = tmp_path / "trace"
    command = f"echo + >> {trace}; sleep 0.3; echo - >> {trace}"
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: fresh_sessions.run(host, command), range(6)))
    assert [r.exit_status for r in results] == [0] * 6
    depth = peak = 0
    for mark in trace.read_text().split():
        depth += 1 if mark == "+" else -1
        peak = max(peak, depth)
    assert peak == 2 and fresh_sessions.stats["transports_opened"] == 1


def test_job_on_ssh_worker_uses_that_workers_ssd_cache(api, sshd, tmp_path, fresh_sessions):
    ssd = tmp_path / "worker-ssd"
    ssh_lane(api, sshd, cache_path=str(ssd), cache_reserve_mb=0)
    project = api.create_project("cache")
    master = ThreadMaster(api).start()
    try:
        sim = project.create_job("simulate_particles", params={"n_particles": 40, "box": 16, "snr": 0})
        sim.queue()  # on this machine's local lane
        assert sim.wait(120) == JobStatus.COMPLETED, sim.model.errors_run
        job = project.create_job("cache_particles")
        job.connect("particles", sim.uid, "particles")
        job.queue(lane="boxes")
        assert job.wait(120) == JobStatus.COMPLETED, job.model.errors_run
    finally:
        master.stop()
    assert job.model.run.cache_path_used == str(ssd / "cryohpc-cache")
    assert any((ssd / "cryohpc-cache").glob("*.dat"))  # the stack, copied there


def test_kill_while_unreachable_is_carried_out_when_the_worker_answers(api, sshd, fresh_sessions):
    ssh_lane(api, sshd, breaker_cooldown_s=0.5, retries=0, breaker_threshold=1)
    job = api.create_project("late kill").create_job("test_sleep", params={"seconds": 120})
    job.queue(lane="boxes")
    master = ThreadMaster(api).start()
    try:
        wait_for(lambda: job.model.status == JobStatus.RUNNING, 60, "the job to run")
        pgid = job.model.run.pid
        sshd.stop()
        killed = cli(api.instance.home, "job", "kill", job.project_uid, job.uid, check=True)
        assert "killed" in killed.stdout
        model = job.model
        assert model.status == JobStatus.KILLED and model.run.kill_pending
        assert "will be stopped when its worker answers again" in model.run.reason
        time.sleep(1.0)
        assert group_members(pgid)  # nobody could reach it yet
        sshd.start()
        wait_for(lambda: not job.model.run.kill_pending, 30, "the pending kill to be carried out")
        assert group_members(pgid) == [] and job.model.status == JobStatus.KILLED
    finally:
        master.stop()
        if not (sshd.folder / "sshd.pid").exists():
            sshd.start()


def test_connect_refuses_a_worker_that_does_not_share_the_projects_root(api, tmp_path):
    """An sshd whose sessions see an empty tmpfs over the projects root (its own mount
    namespace): a machine that could not reach the job directories."""
    root = Path(api.instance.config.projects_root)
    root.mkdir(parents=True, exist_ok=True)
    elsewhere = Sshd(tmp_path / "sshd-elsewhere", free_port(), hide=str(root))
    elsewhere.start()
    try:
        res = cli(api.instance.home, "worker", "connect", "--host", "127.0.0.1", "--port", str(elsewhere.port),
                  "--identity-file", str(elsewhere.key), "--known-hosts", str(elsewhere.known_hosts),
                  "--lane", "boxes", "--new-lane")
    finally:
        elsewhere.stop()
    assert res.returncode == 2
    assert f"the projects root {root} is not shared with it at the same path" in res.stderr
    assert not (api.instance.paths.site_configs / "workers.yaml").exists()
    assert not list(root.glob(".cryohpc-shared-*"))  # the marker is cleaned up


def test_concurrent_connects_lose_no_worker(api):
    """Six 'worker connect' processes at once (recorded without probing): all six land."""
    home = api.instance.home
    cli(home, "worker", "connect", "--host", "gpu00", "--lane", "boxes", "--new-lane", "--no-probe", check=True)
    procs = [subprocess.Popen([sys.executable, "-m", "cryohpc.cli", "--home", str(home), "worker", "connect",
                               "--host", f"gpu{i:02d}", "--lane", "boxes", "--no-probe", "--gpus", "0,1",
                               "--cpus", "8", "--ram-gb", "64"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(1, 7)]
    assert [p.wait(60) for p in procs] == [0] * 6
    assert sorted(w.name for w in api.workers("boxes")) == [f"gpu{i:02d}" for i in range(7)]


def test_a_silent_host_is_marked_unreachable_and_blocks_no_one(api, sshd, fresh_sessions):
    """Fault injection: a target whose port accepts TCP but never speaks SSH (a hung
    machine). It is marked unreachable after its connect timeout; a job queued to it
    waits, not failed; jobs on the real worker beside it run."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        ssh_lane(api, sshd, targets=[{"name": "real"},
                                     {"name": "hung", "port": silent.getsockname()[1], "connect_timeout_s": 1.0}],
                 retries=0, breaker_threshold=1, breaker_cooldown_s=60)
        project = api.create_project("silent")
        stuck = project.create_job("test_sleep", params={"seconds": 0.1})
        stuck.queue(lane="boxes", target="hung")
        fine = [project.create_job("test_sleep", params={"seconds": 0.1}) for _ in range(3)]
        master = ThreadMaster(api).start()
        try:
            for j in fine:
                j.queue(lane="boxes", target="real")
            for j in fine:
                assert j.wait(60) == JobStatus.COMPLETED
            wait_for(lambda: stuck.model.queue_status == QueueStatus.WAITING_UNREACHABLE, 30, "the stuck job to wait")
            assert stuck.model.status == JobStatus.QUEUED
            assert "no SSH banner within 1 s" in stuck.model.run.reason
            with api.instance.store.read() as tx:
                states = tx.worker_states()
            assert states[("boxes", "hung")][0] == "unreachable" and states[("boxes", "real")][0] == "reachable"
        finally:
            master.stop()
    finally:
        silent.close()


def test_job_outlives_the_masters_connection_and_a_master_restart(api, sshd, fresh_sessions):
    ssh_lane(api, sshd)
    job = api.create_project("restart").create_job("test_sleep", params={"seconds": 4})
    job.queue(lane="boxes")
    master = ThreadMaster(api).start()
    wait_for(lambda: job.model.status == JobStatus.RUNNING, 60, "the job to run")
    master.stop()
    fresh_sessions.close_all()  # the master's SSH connection is gone: the worker must not care
    time.sleep(1.0)
    assert group_members(job.model.run.pid) and job.model.status == JobStatus.RUNNING
    master = ThreadMaster(api).start()
    try:
        assert job.wait(60) == JobStatus.COMPLETED
    finally:
        master.stop()
    assert fresh_sessions.stats["transports_opened"] == 2  # one per master
